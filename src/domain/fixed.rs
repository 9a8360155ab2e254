//! `Fixed2`: a non-negative decimal with at most two decimals, held as an
//! integer count of hundredths. Amounts (cents) and hours (centi-hours) use it,
//! so money is stored and summed exactly and never passes through a float
//! column.

use serde::{Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fixed2(i64);

/// Largest accepted value, in hundredths: one billion units. Keeps every sum
/// and product far from `i64` overflow.
const MAX_HUNDREDTHS: i64 = 100_000_000_000;

impl Fixed2 {
    pub const ZERO: Fixed2 = Fixed2(0);

    pub fn from_hundredths(h: i64) -> Self {
        Fixed2(h)
    }

    pub fn hundredths(self) -> i64 {
        self.0
    }

    /// Parse a JSON number from its text as written (serde_json keeps it,
    /// with `arbitrary_precision`), so "at most two decimals" is exact at
    /// every magnitude and no float rounding ever touches money. Trailing
    /// zeros do not count (`1.500` is 1.5); exponents are allowed (`1e2`).
    pub fn parse(value: &serde_json::Value) -> Result<Self, &'static str> {
        let number = value.as_number().ok_or("must be a number")?;
        parse_decimal(&number.to_string()).map(Fixed2)
    }

    /// `self / divisor`, rounded to hundredths half away from zero
    /// (0.025 -> 0.03). `None` when dividing by zero.
    pub fn div_round(self, divisor: Fixed2) -> Option<Fixed2> {
        if divisor.0 == 0 {
            return None;
        }
        // (a/100) / (b/100) in hundredths = a*100/b; both are non-negative.
        let numerator = self.0 as i128 * 100;
        let denominator = divisor.0 as i128;
        let rounded = (2 * numerator + denominator) / (2 * denominator);
        Some(Fixed2(rounded as i64))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// `$100` or `$100.50`, as the notification messages show money.
    pub fn dollars(self) -> String {
        let (units, cents) = (self.0 / 100, self.0 % 100);
        if cents == 0 {
            format!("${units}")
        } else {
            format!("${units}.{cents:02}")
        }
    }
}

impl Fixed2 {
    /// `$1,200.00`: always cents, thousands grouped, as invoices show money.
    pub fn money(self) -> String {
        let units = (self.0 / 100).to_string();
        let mut grouped = String::with_capacity(units.len() + units.len() / 3);
        for (i, digit) in units.chars().enumerate() {
            if i > 0 && (units.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        format!("${grouped}.{:02}", self.0 % 100)
    }
}

/// Hundredths of a non-negative decimal number written in JSON syntax.
fn parse_decimal(text: &str) -> Result<i64, &'static str> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().map_err(|_| "is out of range")?),
        None => (text, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let frac = frac.trim_end_matches('0');
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0); // zero, however written (also -0)
    }
    if negative {
        return Err("must be zero or more");
    }
    // value = digits * 10^(exponent - frac.len()); in hundredths, shift by 2.
    let shift = exponent.saturating_add(2).saturating_sub(frac.len() as i64);
    if shift < 0 {
        return Err("must have at most 2 decimals");
    }
    if digits.len() as i64 + shift > 12 {
        return Err("is too large");
    }
    let hundredths = digits.parse::<i64>().map_err(|_| "is too large")? * 10_i64.pow(shift as u32);
    if hundredths > MAX_HUNDREDTHS {
        return Err("is too large");
    }
    Ok(hundredths)
}

impl Serialize for Fixed2 {
    /// Whole values serialize as integers (`100`), others as the nearest
    /// double (`100.5`), which JSON readers turn back into the same number.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 100 == 0 {
            s.serialize_i64(self.0 / 100)
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_groups_thousands_and_keeps_cents() {
        let m = |h| Fixed2::from_hundredths(h).money();
        assert_eq!(m(120_000), "$1,200.00");
        assert_eq!(m(5), "$0.05");
        assert_eq!(m(12_345_678_901), "$123,456,789.01");
        assert_eq!(m(99_999), "$999.99");
    }

    #[test]
    fn parses_two_decimals_exactly_and_refuses_three() {
        assert_eq!(Fixed2::parse(&json!(0.07)), Ok(Fixed2(7)));
        assert_eq!(Fixed2::parse(&json!(100)), Ok(Fixed2(10_000)));
        assert_eq!(Fixed2::parse(&json!(19.99)), Ok(Fixed2(1999)));
        assert!(Fixed2::parse(&json!(1.001)).is_err());
        assert!(Fixed2::parse(&json!(100.555)).is_err());
        assert!(Fixed2::parse(&json!(-1)).is_err());
        assert!(Fixed2::parse(&json!("1")).is_err());
        assert!(Fixed2::parse(&json!(1e300)).is_err());
        assert!(Fixed2::parse(&json!(12345.678)).is_err());
        assert_eq!(Fixed2::parse(&json!(999999.99)), Ok(Fixed2(99_999_999)));
        assert!(Fixed2::parse(&json!(1e-7)).is_err());
        let text = |t: &str| Fixed2::parse(&serde_json::from_str(t).unwrap());
        assert_eq!(
            text("1.0000000000000001"),
            Err("must have at most 2 decimals")
        );
        assert_eq!(text("1e400"), Err("is too large"));
        assert_eq!(text("1.500"), Ok(Fixed2(150)));
        assert_eq!(text("1.5e1"), Ok(Fixed2(1500)));
        assert_eq!(text("125e-2"), Ok(Fixed2(125)));
        assert_eq!(text("-0"), Ok(Fixed2(0)));
        assert_eq!(text("-0.01"), Err("must be zero or more"));
    }

    #[test]
    fn rate_rounds_half_away_from_zero() {
        // 0.05 / 2 = 0.025 -> 0.03
        assert_eq!(Fixed2(5).div_round(Fixed2(200)), Some(Fixed2(3)));
        // 100 / 3 = 33.333.. -> 33.33
        assert_eq!(Fixed2(10_000).div_round(Fixed2(300)), Some(Fixed2(3333)));
        assert_eq!(Fixed2(10_000).div_round(Fixed2(0)), None);
    }

    #[test]
    fn dollars_show_cents_only_when_present() {
        assert_eq!(Fixed2(10_000).dollars(), "$100");
        assert_eq!(Fixed2(10_050).dollars(), "$100.50");
        assert_eq!(Fixed2(7).dollars(), "$0.07");
        assert_eq!(serde_json::to_string(&Fixed2(10_050)).unwrap(), "100.5");
        assert_eq!(serde_json::to_string(&Fixed2(10_000)).unwrap(), "100");
    }
}
