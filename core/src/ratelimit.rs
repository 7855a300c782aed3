//! Rates as operators write them (`"100/s"`, `"50/min"`, `"3600/h"`), and the
//! GCRA parameters derived from them. The enforcement itself is a Redis
//! script (`mailpipe_state::policy`) so every sender replica shares one budget.

use std::time::Duration;

/// A rate: `count` events per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: f64,
    pub period: Duration,
}

impl Rate {
    /// Time between two events at this rate (GCRA's emission interval).
    pub fn interval(&self) -> Duration {
        self.period.div_f64(self.count.max(f64::MIN_POSITIVE))
    }

    /// Events per second.
    pub fn per_second(&self) -> f64 {
        self.count / self.period.as_secs_f64()
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let err =
            || format!("invalid rate {raw:?}: write it like \"100/s\", \"50/min\" or \"3600/h\"");
        let (count, unit) = raw.trim().split_once('/').ok_or_else(err)?;
        let count: f64 = count.trim().parse().map_err(|_| err())?;
        if !(count > 0.0 && count.is_finite()) {
            return Err(err());
        }
        let unit = unit.trim();
        let (n, unit) = match unit.find(|c: char| !c.is_ascii_digit()) {
            Some(0) | None => (1u64, unit),
            Some(i) => (unit[..i].parse().map_err(|_| err())?, &unit[i..]),
        };
        let secs = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hr" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(err()),
        };
        Ok(Rate {
            count,
            period: Duration::from_secs(secs * n),
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (unit, secs) = match self.period.as_secs() {
            1 => ("s", 1),
            60 => ("min", 60),
            3600 => ("h", 3600),
            86_400 => ("d", 86_400),
            s => return write!(f, "{}/{}s", self.count, s),
        };
        let _ = secs;
        write!(f, "{}/{}", self.count, unit)
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_the_usual_units() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(10));
        let r: Rate = "50/min".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(1200));
        let r: Rate = "3600/h".parse().unwrap();
        assert_eq!(r.per_second(), 1.0);
        let r: Rate = "10/5min".parse().unwrap();
        assert_eq!(r.period, Duration::from_secs(300));
        assert_eq!("100/s".parse::<Rate>().unwrap().to_string(), "100/s");
    }

    #[test]
    fn nonsense_rates_are_refused() {
        for bad in ["", "100", "0/s", "-1/s", "x/s", "10/fortnight", "10/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
    }
}
