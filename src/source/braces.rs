//! Brace patterns for shard lists, as WebDataset users write them (`braceexpand`, bash):
//! `shard-{000000..000099}.tar` is a zero-padded numeric range, `{train,val}` a list, and
//! groups nest and combine (`{a,b}-{0..2}`). A group with neither a comma nor `..` stays
//! literal, as in bash. Ranges may count down and take a step (`{10..0..5}`).

/// The most names one pattern may expand to: a typo such as `{0..99999999999}` is an error,
/// not an allocation that takes the machine down.
pub const MAX_EXPANSION: usize = 10_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BraceError {
    #[error("`{pattern}`: unbalanced braces")]
    Unbalanced { pattern: String },
    #[error("`{pattern}`: bad range `{{{range}}}`: {why}")]
    Range {
        pattern: String,
        range: String,
        why: String,
    },
    #[error("`{pattern}`: expands to more than {MAX_EXPANSION} names")]
    TooMany { pattern: String },
}

/// Expands `pattern` into the names it stands for, in order (the leftmost group varies slowest).
pub fn expand(pattern: &str) -> Result<Vec<String>, BraceError> {
    let mut out = Vec::new();
    expand_into(pattern, pattern, &mut out)?;
    Ok(out)
}

fn expand_into(whole: &str, pattern: &str, out: &mut Vec<String>) -> Result<(), BraceError> {
    let Some((open, close)) = first_group(whole, pattern)? else {
        push(whole, out, pattern.to_string())?;
        return Ok(());
    };
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let choices = match alternatives(body) {
        Some(parts) => parts.into_iter().map(str::to_string).collect(),
        None if body.contains("..") && !body.contains('{') => range(whole, body)?,
        None => {
            // Literal braces: keep them, expand what follows.
            let mut rest = Vec::new();
            expand_into(whole, tail, &mut rest)?;
            for r in rest {
                push(whole, out, format!("{head}{{{body}}}{r}"))?;
            }
            return Ok(());
        }
    };
    let mut tails = Vec::new();
    expand_into(whole, tail, &mut tails)?;
    for choice in choices {
        let mut heads = Vec::new();
        expand_into(whole, &format!("{head}{choice}"), &mut heads)?;
        for h in &heads {
            for t in &tails {
                push(whole, out, format!("{h}{t}"))?;
            }
        }
    }
    Ok(())
}

fn push(whole: &str, out: &mut Vec<String>, name: String) -> Result<(), BraceError> {
    if out.len() >= MAX_EXPANSION {
        return Err(BraceError::TooMany {
            pattern: whole.to_string(),
        });
    }
    out.push(name);
    Ok(())
}

/// The byte positions of the first top-level `{` and its matching `}`.
fn first_group(whole: &str, pattern: &str) -> Result<Option<(usize, usize)>, BraceError> {
    let unbalanced = || BraceError::Unbalanced {
        pattern: whole.to_string(),
    };
    let mut depth = 0usize;
    let mut open = None;
    for (i, c) in pattern.char_indices() {
        match c {
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            '}' => {
                depth = depth.checked_sub(1).ok_or_else(unbalanced)?;
                if depth == 0 {
                    return Ok(Some((open.expect("set at depth 0"), i)));
                }
            }
            _ => {}
        }
    }
    match depth {
        0 => Ok(None),
        _ => Err(unbalanced()),
    }
}

/// The comma-separated parts of a group's body at its top level, if it has a top-level comma.
fn alternatives(body: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(&body[start..]);
    Some(parts)
}

/// `a..b[..step]`: integers from a to b inclusive, zero-padded to the wider bound when either
/// bound is written with a leading zero (braceexpand's rule).
fn range(whole: &str, body: &str) -> Result<Vec<String>, BraceError> {
    let bad = |why: &str| BraceError::Range {
        pattern: whole.to_string(),
        range: body.to_string(),
        why: why.to_string(),
    };
    let parts: Vec<&str> = body.split("..").collect();
    let (a, b, step) = match parts[..] {
        [a, b] => (a, b, "1"),
        [a, b, s] => (a, b, s),
        _ => return Err(bad("expected `{first..last}` or `{first..last..step}`")),
    };
    let num = |s: &str| -> Result<i64, BraceError> {
        s.parse::<i64>()
            .map_err(|_| bad(&format!("`{s}` is not an integer")))
    };
    let (first, last) = (num(a)?, num(b)?);
    let step = num(step)?.unsigned_abs();
    if step == 0 {
        return Err(bad("the step must not be 0"));
    }
    let padded = |s: &str| {
        let digits = s.trim_start_matches('-');
        digits.len() > 1 && digits.starts_with('0')
    };
    let width = if padded(a) || padded(b) {
        a.len().max(b.len())
    } else {
        0
    };
    let count = first.abs_diff(last) / step + 1;
    if count > MAX_EXPANSION as u64 {
        return Err(BraceError::TooMany {
            pattern: whole.to_string(),
        });
    }
    let down = last < first;
    Ok((0..count)
        .map(|k| {
            let offset = (k * step) as i64;
            let v = if down { first - offset } else { first + offset };
            format!("{v:0width$}")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str) -> Vec<String> {
        expand(p).unwrap()
    }

    #[test]
    fn zero_padded_ranges_lists_and_nesting() {
        assert_eq!(
            e("shard-{000..002}.tar"),
            ["shard-000.tar", "shard-001.tar", "shard-002.tar"]
        );
        assert_eq!(e("{8..11}"), ["8", "9", "10", "11"]);
        assert_eq!(e("{09..11}"), ["09", "10", "11"]);
        assert_eq!(e("{3..1}"), ["3", "2", "1"]);
        assert_eq!(e("{0..10..5}"), ["0", "5", "10"]);
        assert_eq!(
            e("d/{train,val}-{0..1}.tar"),
            [
                "d/train-0.tar",
                "d/train-1.tar",
                "d/val-0.tar",
                "d/val-1.tar"
            ]
        );
        assert_eq!(e("{a,b{1..2}}x"), ["ax", "b1x", "b2x"]);
        assert_eq!(e("{a,}.tar"), ["a.tar", ".tar"]);
        assert_eq!(e("plain.tar"), ["plain.tar"]);
        assert_eq!(e("lit{x}-{0..1}"), ["lit{x}-0", "lit{x}-1"]);
        assert_eq!(e("shard-{000000..000099}.tar").len(), 100);
        assert_eq!(e("shard-{000000..000099}.tar")[99], "shard-000099.tar");
    }

    #[test]
    fn bad_patterns_are_errors_naming_the_pattern() {
        for (p, what) in [
            ("a{0..3", "unbalanced"),
            ("a}b", "unbalanced"),
            ("{0..x}", "not an integer"),
            ("{0..4..0}", "step"),
            ("{0..1..2..3}", "expected"),
            ("{0..99999999999}", "more than"),
        ] {
            let err = expand(p).unwrap_err().to_string();
            assert!(err.contains(p) && err.contains(what), "{p}: {err}");
        }
    }

    /// The same expansions as Python's `braceexpand` (webdataset's dependency) gives; the
    /// expected lists were produced by it.
    #[test]
    fn matches_braceexpand_on_its_documented_examples() {
        assert_eq!(e("{1..3}"), ["1", "2", "3"]);
        assert_eq!(e("{a,b}{1..2}"), ["a1", "a2", "b1", "b2"]);
        assert_eq!(e("{-1..2}"), ["-1", "0", "1", "2"]);
        assert_eq!(e("{001..3}"), ["001", "002", "003"]);
        assert_eq!(e("a{b,c{d,e}}"), ["ab", "acd", "ace"]);
    }
}
