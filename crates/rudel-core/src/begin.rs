//! `--begin=TIME` (Slurm formats) resolved against the submitter's clock to an absolute
//! log time in ms. Times of day and dates are taken as UTC (Slurm uses the controller's
//! local zone; the head runs on UTC here): documented so a user is not surprised.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BeginError {
    #[error("invalid --begin time {0:?} (use now+N[seconds|minutes|hours|days], HH:MM[:SS], YYYY-MM-DD[THH:MM[:SS]])")]
    Invalid(String),
}

const DAY_MS: u64 = 86_400_000;

/// Resolve `text` to an absolute time in ms since the epoch, given `now_ms`.
pub fn parse_begin(text: &str, now_ms: u64) -> Result<u64, BeginError> {
    let bad = || BeginError::Invalid(text.to_string());
    let t = text.trim().to_ascii_lowercase();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(rest) = t.strip_prefix("now+") {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_ms = match &rest[digits..] {
            "" | "s" | "sec" | "second" | "seconds" => 1_000,
            "m" | "min" | "minute" | "minutes" => 60_000,
            "h" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => DAY_MS,
            "w" | "week" | "weeks" => 7 * DAY_MS,
            _ => return Err(bad()),
        };
        return n
            .checked_mul(unit_ms)
            .and_then(|d| now_ms.checked_add(d))
            .ok_or_else(bad);
    }
    if t.contains('-') {
        let (date, time) = t.split_once('t').unwrap_or((&t, "00:00"));
        let mut p = date.split('-').map(|x| x.parse::<u64>());
        let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d)), None) = (p.next(), p.next(), p.next(), p.next()) else {
            return Err(bad());
        };
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return Err(bad());
        }
        let tod = time_of_day(time).ok_or_else(bad)?;
        return Ok(days_from_civil(y, m, d) * DAY_MS + tod);
    }
    // HH:MM[:SS]: today, or tomorrow if that time has passed (Slurm's rule).
    let tod = time_of_day(&t).ok_or_else(bad)?;
    let today = now_ms - now_ms % DAY_MS;
    let at = today + tod;
    Ok(if at < now_ms { at + DAY_MS } else { at })
}

fn time_of_day(text: &str) -> Option<u64> {
    let mut p = text.split(':').map(|x| x.parse::<u64>().ok());
    let h = p.next()??;
    let m = p.next()??;
    let s = p.next().unwrap_or(Some(0))?;
    if p.next().is_some() || h > 23 || m > 59 || s > 59 {
        return None;
    }
    Some(((h * 60 + m) * 60 + s) * 1_000)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm), for y >= 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_formats() {
        let now = 1_700_000_000_000; // 2023-11-14T22:13:20Z
        assert_eq!(parse_begin("now+60", now), Ok(now + 60_000));
        assert_eq!(parse_begin("now+1hour", now), Ok(now + 3_600_000));
        assert_eq!(parse_begin("now+5minutes", now), Ok(now + 300_000));
        assert_eq!(parse_begin("2023-11-15T00:00:00", now), Ok(1_700_006_400_000));
        assert_eq!(parse_begin("2023-11-15", now), Ok(1_700_006_400_000));
        // 16:00 has passed on that day: tomorrow
        assert_eq!(parse_begin("16:00", now), Ok(1_700_006_400_000 + 16 * 3_600_000));
        assert_eq!(parse_begin("23:00", now), Ok(1_700_006_400_000 - 3_600_000));
        assert_eq!(parse_begin("1970-01-01T00:00:01", now), Ok(1_000));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "now+",
            "now+3parsecs",
            "25:00",
            "2023-13-01",
            "tomorrowish",
            "12:00:00:00",
        ] {
            assert!(parse_begin(bad, 0).is_err(), "{bad}");
        }
    }
}
