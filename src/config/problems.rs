//! Validation problems, collected rather than thrown, so a user sees every mistake at once.

use std::fmt;

/// One problem with a configuration value, keyed by its dotted path (`train.lr`).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every problem found while validating a pipeline.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    items: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records a problem unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.push(key, message());
        }
    }

    /// Checks `lo <= value <= hi`.
    pub fn in_range(&mut self, key: &str, value: f64, lo: f64, hi: f64) {
        self.check(value.is_finite() && value >= lo && value <= hi, key, || {
            format!("must be in [{lo}, {hi}], got {value}")
        });
    }

    /// Checks `value > 0`.
    pub fn positive(&mut self, key: &str, value: f64) {
        self.check(value.is_finite() && value > 0.0, key, || {
            format!("must be > 0, got {value}")
        });
    }

    /// Checks that `[lo, hi]` is an ordered interval inside `[min, max]`.
    pub fn interval(&mut self, key: &str, range: [f64; 2], min: f64, max: f64) {
        let [lo, hi] = range;
        self.check(
            lo.is_finite() && hi.is_finite() && min <= lo && lo <= hi && hi <= max,
            key,
            || format!("must be an interval [lo, hi] with {min} <= lo <= hi <= {max}, got [{lo}, {hi}]"),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter()
    }

    pub fn extend(&mut self, other: Problems) {
        self.items.extend(other.items);
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}
