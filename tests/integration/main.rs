//! Integration tests: the real `beatd` binary, run against configs in temp dirs.

mod api;
mod browser;
mod builtins;
mod check;
mod checks;
mod cluster;
mod damage;
mod delivery;
mod disk;
mod email;
mod inproc;
mod next;
mod prometheus;
mod queue;
mod reload;
mod restart;
mod retention;
mod run;
mod runs;
mod schema;
mod security;
mod shell;
mod sql;
mod systemd;
mod tls;
mod util;
