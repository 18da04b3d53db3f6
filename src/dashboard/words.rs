//! A schedule in words, for people: "every 5 minutes", "at 02:00 every day", "at 09:00 on
//! Monday". The dashboard shows the expression beside it, so a schedule these rules do not
//! cover is shown as the expression alone rather than guessed at.

use std::time::Duration;

const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The schedule text of a job (`every 5m`, `every 1h offset 10m`, a cron expression,
/// `@reboot`) in words, when it has a plain reading.
pub fn describe(schedule_text: &str) -> Option<String> {
    let text = schedule_text.trim();
    if let Some(every) = text.strip_prefix("every ") {
        let (period, offset) = match every.split_once(" offset ") {
            Some((p, o)) => (p, Some(o)),
            None => (every, None),
        };
        let mut words = format!("every {}", period_words(humantime::parse_duration(period.trim()).ok()?));
        if let Some(o) = offset {
            words.push_str(&format!(", {} in", o.trim()));
        }
        return Some(words);
    }
    match text.to_ascii_lowercase().as_str() {
        "@reboot" => return Some("once, when beatd starts".into()),
        "@hourly" => return Some("every hour".into()),
        "@daily" | "@midnight" => return Some("at 00:00 every day".into()),
        "@weekly" => return Some("at 00:00 on Sunday".into()),
        "@monthly" => return Some("at 00:00 on day 1 of the month".into()),
        "@yearly" | "@annually" => return Some("at 00:00 on 1 January".into()),
        _ => {}
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else { return None };
    if month != "*" {
        return None;
    }
    let days = days_words(dom, dow)?;
    if hour == "*" {
        if dom != "*" || dow != "*" {
            return None;
        }
        if minute == "*" {
            return Some("every minute".into());
        }
        if let Some(step) = minute.strip_prefix("*/") {
            let n: u32 = step.parse().ok()?;
            return Some(if n == 1 { "every minute".into() } else { format!("every {n} minutes") });
        }
        let m: u32 = minute.parse().ok().filter(|m| *m < 60)?;
        return Some(if m == 0 { "every hour".into() } else { format!("every hour at :{m:02}") });
    }
    let m: u32 = minute.parse().ok().filter(|m| *m < 60)?;
    let hours: Vec<u32> = hour.split(',').map(|h| h.parse().ok().filter(|h| *h < 24)).collect::<Option<_>>()?;
    let times: Vec<String> = hours.iter().map(|h| format!("{h:02}:{m:02}")).collect();
    Some(format!("at {} {days}", list(&times)))
}

/// "every day", "on Monday", "on Monday to Friday", "on day 1 of the month".
fn days_words(dom: &str, dow: &str) -> Option<String> {
    match (dom, dow) {
        ("*", "*") => Some("every day".into()),
        ("*", dow) => {
            let parts: Vec<String> = dow
                .split(',')
                .map(|part| match part.split_once('-') {
                    Some((a, b)) => Some(format!("{} to {}", day(a)?, day(b)?)),
                    None => day(part).map(str::to_string),
                })
                .collect::<Option<_>>()?;
            Some(format!("on {}", list(&parts)))
        }
        (dom, "*") => {
            let days: Vec<u32> =
                dom.split(',').map(|d| d.parse().ok().filter(|d| (1..=31).contains(d))).collect::<Option<_>>()?;
            let days: Vec<String> = days.iter().map(u32::to_string).collect();
            Some(format!("on day {} of the month", list(&days)))
        }
        _ => None,
    }
}

fn day(s: &str) -> Option<&'static str> {
    let s = s.trim().to_ascii_lowercase();
    let i = match s.parse::<usize>() {
        Ok(7) => 0,
        Ok(n) if n < 7 => n,
        Ok(_) => return None,
        Err(_) => DAY_NAMES.iter().position(|d| *d == s)?,
    };
    Some(DAYS[i])
}

/// "a", "a and b", "a, b and c".
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// "second", "5 minutes", "hour", "90 seconds".
fn period_words(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s == 0 {
        (d.as_millis() as u64, "millisecond")
    } else if s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    if n == 1 { unit.to_string() } else { format!("{n} {unit}s") }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn plain_schedules_read_as_words() {
        let cases = [
            ("every 5m", "every 5 minutes"),
            ("every 1s", "every second"),
            ("every 90s", "every 90 seconds"),
            ("every 1h", "every hour"),
            ("every 1h offset 10m", "every hour, 10m in"),
            ("every 2d", "every 2 days"),
            ("*/5 * * * *", "every 5 minutes"),
            ("* * * * *", "every minute"),
            ("0 * * * *", "every hour"),
            ("15 * * * *", "every hour at :15"),
            ("0 2 * * *", "at 02:00 every day"),
            ("30 9,17 * * *", "at 09:30 and 17:30 every day"),
            ("0 9 * * 1", "at 09:00 on Monday"),
            ("0 9 * * MON", "at 09:00 on Monday"),
            ("0 9 * * mon-fri", "at 09:00 on Monday to Friday"),
            ("0 9 * * 1,4", "at 09:00 on Monday and Thursday"),
            ("0 0 1 * *", "at 00:00 on day 1 of the month"),
            ("@daily", "at 00:00 every day"),
            ("@reboot", "once, when beatd starts"),
        ];
        for (text, words) in cases {
            assert_eq!(describe(text).as_deref(), Some(words), "{text}");
        }
    }

    #[test]
    fn what_has_no_plain_reading_is_left_to_the_expression() {
        for text in ["0 9 1 * 1", "0 9 * 6 *", "0 */2 * * *", "5-10 3 * * *", "0 9 * * 1#2", "0 9 L * *", "nonsense"] {
            assert_eq!(describe(text), None, "{text}");
        }
    }
}
