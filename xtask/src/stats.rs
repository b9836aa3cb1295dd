//! Small helpers shared by the `bench` and `load` reports.

/// The median of `v` (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The median of the finite values of `v` (NaN and infinities left out).
pub(crate) fn median_finite(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    median(v)
}

/// A number with 3 significant-ish digits for tables (`1234`, `12.3`, `1.23`, `0.123`).
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Notes as the elements of a JSON array of strings (quotes and backslashes become `'`,
/// newlines spaces), joined with `, `.
pub(crate) fn json_notes(notes: &[String]) -> String {
    notes
        .iter()
        .map(|n| format!("\"{}\"", n.replace(['"', '\\'], "'").replace('\n', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_format() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(json_notes(&["a \"b\"\nc".into()]), "\"a 'b' c\"");
    }
}
