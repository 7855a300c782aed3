//! The conditions on a reply's codes: a basic-code pattern (`550`, `5xx`,
//! `55x`) and an enhanced-code pattern (`4.4.*`, `*.2.2`, `5.7.606-649`).

use super::schema::CodeValue;
use crate::classify::enhanced::EnhancedCode;

/// Which basic codes a rule accepts: each of the three digits fixed or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodePattern([Option<u8>; 3]);

impl CodePattern {
    pub(super) fn parse(value: &CodeValue) -> Result<CodePattern, String> {
        let text = match value {
            CodeValue::Number(n) => format!("{n:03}"),
            CodeValue::Text(s) => s.trim().to_string(),
        };
        let chars: Vec<char> = text.chars().collect();
        if chars.len() != 3 {
            return Err("expected three characters, digits or `x` (550, 5xx, 55x)".into());
        }
        let mut digits = [None; 3];
        for (slot, c) in digits.iter_mut().zip(&chars) {
            *slot = match c {
                'x' | 'X' | '*' => None,
                d if d.is_ascii_digit() => d.to_digit(10).and_then(|d| u8::try_from(d).ok()),
                _ => return Err("expected digits or `x`".into()),
            };
        }
        if digits[0].is_none() && digits.iter().any(Option::is_some) {
            return Err("the first digit must be fixed when later ones are".into());
        }
        Ok(CodePattern(digits))
    }

    pub fn matches(&self, code: u16) -> bool {
        if code > 999 {
            return false;
        }
        let actual = [code / 100, code / 10 % 10, code % 10];
        self.0
            .iter()
            .zip(actual)
            .all(|(want, got)| want.is_none_or(|w| u16::from(w) == got))
    }
}

/// Which enhanced codes a rule accepts: each part a value, a range or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnhancedPattern([(u16, u16); 3]);

impl EnhancedPattern {
    pub(super) fn parse(text: &str) -> Result<EnhancedPattern, String> {
        const ANY: (u16, u16) = (0, u16::MAX);
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err("expected class.subject.detail".into());
        }
        let is_any = |p: &str| matches!(p.trim(), "*" | "x" | "X");
        if parts.len() < 3 && !parts.last().is_some_and(|p| is_any(p)) {
            return Err("expected three parts, or a prefix ending in `*` (4.4.*)".into());
        }
        let limits = [(5u16, "class"), (7, "subject"), (999, "detail")];
        let mut ranges = [ANY; 3];
        for (i, part) in parts.iter().enumerate() {
            let part = part.trim();
            if is_any(part) {
                continue;
            }
            let number = |s: &str| -> Result<u16, String> {
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("`{s}` is not a number, a range or `*`"))
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let n = number(part)?;
                    (n, n)
                }
            };
            let (max, what) = limits[i];
            if lo > hi || hi > max {
                return Err(format!("{what} out of range (0..={max})"));
            }
            if i == 0 && !(lo..=hi).all(|c| matches!(c, 2 | 4 | 5)) {
                return Err("class must be 2, 4 or 5".into());
            }
            ranges[i] = (lo, hi);
        }
        Ok(EnhancedPattern(ranges))
    }

    pub fn matches(&self, code: EnhancedCode) -> bool {
        let actual = [u16::from(code.class), code.subject, code.detail];
        self.0
            .iter()
            .zip(actual)
            .all(|(&(lo, hi), got)| (lo..=hi).contains(&got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_patterns() {
        let p = |s: &str| CodePattern::parse(&CodeValue::Text(s.into())).expect("valid");
        assert!(p("5xx").matches(550));
        assert!(p("5xx").matches(500));
        assert!(!p("5xx").matches(450));
        assert!(p("55x").matches(554));
        assert!(!p("55x").matches(541));
        assert!(p("421").matches(421));
        assert!(!p("421").matches(420));
        assert!(CodePattern::parse(&CodeValue::Number(550))
            .expect("valid")
            .matches(550));
        for bad in ["5x", "5xxx", "x5x", "5a0", ""] {
            assert!(
                CodePattern::parse(&CodeValue::Text(bad.into())).is_err(),
                "{bad}"
            );
        }
        assert!(CodePattern::parse(&CodeValue::Number(5500)).is_err());
    }

    #[test]
    fn enhanced_patterns() {
        let p = |s: &str| EnhancedPattern::parse(s).expect("valid");
        let c = |s: &str| s.parse::<EnhancedCode>().expect("code");
        assert!(p("5.1.1").matches(c("5.1.1")));
        assert!(!p("5.1.1").matches(c("5.1.10")));
        assert!(p("4.4.*").matches(c("4.4.3")));
        assert!(!p("4.4.*").matches(c("5.4.3")));
        assert!(p("*.2.2").matches(c("4.2.2")));
        assert!(p("x.2.2").matches(c("5.2.2")));
        assert!(p("5.7.606-649").matches(c("5.7.620")));
        assert!(!p("5.7.606-649").matches(c("5.7.650")));
        assert!(p("4.*").matches(c("4.7.1")));
        assert!(p("4-5.7.1").matches(c("4.7.1")));
        for bad in [
            "5.1",
            "3.1.1",
            "5.8.1",
            "5.1.1000",
            "5.1.1.1",
            "5.7.649-606",
            "a.b.c",
            "3-5.1.1",
        ] {
            assert!(EnhancedPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
