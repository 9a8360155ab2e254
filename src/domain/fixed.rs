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

    /// Parse a JSON number. JSON numbers reach us as the nearest `f64`;
    /// its shortest round-trip text is the number as written (for up to 15
    /// significant digits), so counting its decimals is exact where scaling
    /// by 100 and comparing would blur at large magnitudes.
    pub fn parse(value: &serde_json::Value) -> Result<Self, &'static str> {
        let number = value.as_f64().ok_or("must be a number")?;
        if !number.is_finite() {
            return Err("must be a finite number");
        }
        if number < 0.0 {
            return Err("must be zero or more");
        }
        if number * 100.0 > MAX_HUNDREDTHS as f64 {
            return Err("is too large");
        }
        let text = number.to_string();
        if text
            .split_once('.')
            .is_some_and(|(_, decimals)| decimals.len() > 2)
        {
            return Err("must have at most 2 decimals");
        }
        Ok(Fixed2((number * 100.0).round() as i64))
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
        assert_eq!(Fixed2::parse(&json!(1e-7)).is_err(), true);
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
