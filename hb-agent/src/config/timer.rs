//! Time values, exactly in the forms Heartbeat's `get_msec` accepted: a plain number is
//! seconds (`2`, `0.5`, `.5`), `ms`/`msec` means milliseconds (`50ms`, `1.5ms`), `us`/`usec`
//! microseconds (`1500us`); units are case-insensitive. The result is rounded to whole
//! milliseconds, half up, as Heartbeat did (`499us` is 0 ms, `501us` is 1 ms).
//!
//! Stricter than Heartbeat's `atof` in one way: the number must be well formed (`1.2.3` and
//! `2x` are errors, not silently `1.2` or rejected by accident). A unit Heartbeat did not
//! know (`10s`) stays an error, so files keep working with both daemons.

use std::time::Duration;

/// Longest time any directive accepts: one day. Larger values are typing mistakes, and the
/// cap keeps all arithmetic on timers far from overflow.
pub const MAX_TIME_MS: u64 = 24 * 60 * 60 * 1000;

/// Digits before the decimal point beyond which a value is certainly above [`MAX_TIME_MS`].
const MAX_INTEGER_DIGITS: usize = 12;
/// Fraction digits that matter for rounding to milliseconds (microseconds need 9 for `s`).
const FRACTION_DIGITS: usize = 9;
const FRACTION_SCALE: u128 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("missing time value")]
    Empty,
    #[error("`{0}` is not a time: expected seconds (`2`, `0.5`) or milliseconds (`500ms`)")]
    NotANumber(String),
    #[error(
        "`{text}`: unknown time unit `{unit}`; Heartbeat's forms are a plain number of seconds \
         (`2`, `1.5`), milliseconds (`1500ms`) or microseconds (`1500000us`)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is longer than one day")]
    TooLarge(String),
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
    Micros,
}

/// Parses one time value (see the module docs).
pub fn parse_time(text: &str) -> Result<Duration, TimeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TimeError::Empty);
    }
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit_text) = text.split_at(number_len);
    let unit = match unit_text.trim_start().to_ascii_lowercase().as_str() {
        "" => Unit::Seconds,
        "ms" | "msec" => Unit::Millis,
        "us" | "usec" => Unit::Micros,
        _ if number.is_empty() => return Err(TimeError::NotANumber(text.to_string())),
        other => {
            return Err(TimeError::UnknownUnit {
                text: text.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let (integer, fraction) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (integer.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(TimeError::NotANumber(text.to_string()));
    }
    let integer = integer.trim_start_matches('0');
    if integer.len() > MAX_INTEGER_DIGITS {
        return Err(TimeError::TooLarge(text.to_string()));
    }
    let whole: u128 = if integer.is_empty() {
        0
    } else {
        integer
            .parse()
            .map_err(|_| TimeError::NotANumber(text.to_string()))?
    };
    // The first nine fraction digits, zero-padded; later digits cannot change the rounding
    // of anything but exact half-millisecond ties, which Heartbeat's doubles did not get
    // exactly right either.
    let mut nanos_of_unit: u128 = 0;
    for digit in fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(FRACTION_DIGITS)
    {
        nanos_of_unit = nanos_of_unit * 10 + u128::from(digit - b'0');
    }
    let billionths_of_unit = whole * FRACTION_SCALE + nanos_of_unit;
    let ms = match unit {
        Unit::Seconds => (billionths_of_unit * 1000 + FRACTION_SCALE / 2) / FRACTION_SCALE,
        Unit::Millis => (billionths_of_unit + FRACTION_SCALE / 2) / FRACTION_SCALE,
        Unit::Micros => (billionths_of_unit + FRACTION_SCALE * 1000 / 2) / (FRACTION_SCALE * 1000),
    };
    if ms > u128::from(MAX_TIME_MS) {
        return Err(TimeError::TooLarge(text.to_string()));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// A time for messages: `2 s`, `1.5 s`, `500 ms`.
pub fn format_time(time: Duration) -> String {
    let ms = time.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{} s", text.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(text: &str) -> Result<u64, TimeError> {
        parse_time(text).map(|d| d.as_millis() as u64)
    }

    #[test]
    fn heartbeat_get_msec_examples() {
        // The examples from the comment above Heartbeat's get_msec().
        assert_eq!(ms("1"), Ok(1000));
        assert_eq!(ms("1000ms"), Ok(1000));
        assert_eq!(ms("1000000us"), Ok(1000));
        assert_eq!(ms("0.1"), Ok(100));
        assert_eq!(ms("100ms"), Ok(100));
        assert_eq!(ms("100000us"), Ok(100));
        assert_eq!(ms("0.001"), Ok(1));
        assert_eq!(ms("1ms"), Ok(1));
        assert_eq!(ms("1000us"), Ok(1));
        assert_eq!(ms("499us"), Ok(0));
        assert_eq!(ms("501us"), Ok(1));
    }

    #[test]
    fn other_accepted_forms() {
        assert_eq!(ms("50ms"), Ok(50));
        assert_eq!(ms("50MS"), Ok(50));
        assert_eq!(ms("2msec"), Ok(2));
        assert_eq!(ms("1.5"), Ok(1500));
        assert_eq!(ms(".5"), Ok(500));
        assert_eq!(ms("5."), Ok(5000));
        assert_eq!(ms("1.5ms"), Ok(2));
        assert_eq!(ms("007"), Ok(7000));
        assert_eq!(ms("86400"), Ok(MAX_TIME_MS));
    }

    #[test]
    fn rejected_forms() {
        assert_eq!(ms(""), Err(TimeError::Empty));
        assert!(matches!(ms("10s"), Err(TimeError::UnknownUnit { unit, .. }) if unit == "s"));
        assert!(matches!(ms("2x"), Err(TimeError::UnknownUnit { .. })));
        assert!(matches!(ms("1.2.3"), Err(TimeError::NotANumber(_))));
        assert!(matches!(ms("."), Err(TimeError::NotANumber(_))));
        assert!(matches!(ms("ms"), Err(TimeError::NotANumber(_))));
        assert!(matches!(ms("-1"), Err(TimeError::NotANumber(_))));
        assert!(matches!(ms("86401"), Err(TimeError::TooLarge(_))));
        assert!(matches!(
            ms("99999999999999999999999"),
            Err(TimeError::TooLarge(_))
        ));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_time(Duration::from_millis(2000)), "2 s");
        assert_eq!(format_time(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(format_time(Duration::from_millis(50)), "50 ms");
        assert_eq!(format_time(Duration::from_millis(0)), "0 ms");
        assert_eq!(format_time(Duration::from_millis(1001)), "1.001 s");
    }

    proptest! {
        #[test]
        fn milliseconds_round_trip(value in 0..=MAX_TIME_MS) {
            prop_assert_eq!(ms(&format!("{value}ms")), Ok(value));
        }

        #[test]
        fn seconds_with_decimals(secs in 0u64..86_400, millis in 0u64..1000) {
            prop_assert_eq!(ms(&format!("{secs}.{millis:03}")), Ok(secs * 1000 + millis));
        }

        #[test]
        fn microseconds_round_half_up(us in 0u64..=MAX_TIME_MS * 1000) {
            prop_assert_eq!(ms(&format!("{us}us")), Ok((us + 500) / 1000));
        }

        #[test]
        fn format_then_parse_is_identity(value in 0..=MAX_TIME_MS) {
            let shown = format_time(Duration::from_millis(value));
            let heartbeat_form = match shown.strip_suffix(" ms") {
                Some(n) => format!("{n}ms"),
                None => shown.trim_end_matches(" s").to_string(),
            };
            prop_assert_eq!(ms(&heartbeat_form), Ok(value));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_time(&text);
        }

        #[test]
        fn never_panics_on_numberish(text in "[0-9.]{0,30}(ms|us|s|msec|x)?") {
            if let Ok(d) = parse_time(&text) {
                prop_assert!(d.as_millis() as u64 <= MAX_TIME_MS);
            }
        }
    }
}
