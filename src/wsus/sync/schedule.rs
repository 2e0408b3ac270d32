//! `sync_schedule`: `off`, a daily time `HH:MM` (UTC), or an interval
//! (`30m`, `6h`, `1d`).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Off,
    /// Every day at this minute of the day (UTC).
    Daily {
        hour: u8,
        minute: u8,
    },
    Every(Duration),
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(Schedule::Off);
        }
        if let Some((h, m)) = s.split_once(':') {
            let hour: u8 = h.parse().map_err(|_| bad(s))?;
            let minute: u8 = m.parse().map_err(|_| bad(s))?;
            if hour > 23 || minute > 59 || m.len() != 2 {
                return Err(bad(s));
            }
            return Ok(Schedule::Daily { hour, minute });
        }
        let split = s.len()
            - s.chars()
                .rev()
                .take_while(char::is_ascii_alphabetic)
                .count();
        let (n, unit) = s.split_at(split);
        let n: u64 = n.trim().parse().map_err(|_| bad(s))?;
        let secs = match unit {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(bad(s)),
        };
        if n == 0 || n * secs < 60 {
            return Err(format!("{s:?}: an interval of at least one minute"));
        }
        Ok(Schedule::Every(Duration::from_secs(n * secs)))
    }

    /// The next run after `now` (unix seconds), given the last run's start.
    pub fn next(&self, now: i64, last_start: Option<i64>) -> Option<i64> {
        match *self {
            Schedule::Off => None,
            Schedule::Every(d) => {
                Some(last_start.map_or(now, |l| (l + d.as_secs() as i64).max(now)))
            }
            Schedule::Daily { hour, minute } => {
                let at = i64::from(hour) * 3600 + i64::from(minute) * 60;
                let day = now - now.rem_euclid(86400);
                let today = day + at;
                Some(if today > now { today } else { today + 86400 })
            }
        }
    }
}

fn bad(s: &str) -> String {
    format!("{s:?}: expected off, a daily HH:MM (UTC) or an interval such as 6h")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Schedule::parse("off").unwrap(), Schedule::Off);
        assert_eq!(
            Schedule::parse("03:30").unwrap(),
            Schedule::Daily {
                hour: 3,
                minute: 30
            }
        );
        assert_eq!(
            Schedule::parse("6h").unwrap(),
            Schedule::Every(Duration::from_secs(6 * 3600))
        );
        for bad in ["24:00", "3:5", "6x", "0h", "10s", "h"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_runs() {
        let day = 86400 * 20_000;
        let daily = Schedule::Daily { hour: 3, minute: 0 };
        assert_eq!(daily.next(day + 3600, None), Some(day + 3 * 3600));
        assert_eq!(
            daily.next(day + 4 * 3600, None),
            Some(day + 86400 + 3 * 3600)
        );
        let every = Schedule::Every(Duration::from_secs(3600));
        assert_eq!(every.next(day, Some(day - 60)), Some(day + 3540));
        assert_eq!(every.next(day, Some(day - 7200)), Some(day));
        assert_eq!(Schedule::Off.next(day, None), None);
    }
}
