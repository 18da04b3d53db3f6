//! Imports: schedules written for other schedulers, printed as beatd configs that `beatd
//! check` accepts and that fire at the same instants. What cannot keep its meaning is refused
//! with its place and the reason, never changed in silence.

pub mod crontab;
