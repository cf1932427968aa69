//! A policy error that says where, what and how to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one policy file.
///
/// Displayed as `file:line:col: reason; fix`, e.g.
/// `policies/alarm.toml:7:1: unknown key "memroy_mib" in [resources]; did you mean "memory_mib"?`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy file.
    pub file: PathBuf,
    /// 1-based line (0 when the error concerns the whole file).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Dotted key, e.g. `resources.memory_mib` (empty if none applies).
    pub key: String,
    /// What is wrong.
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

impl PolicyError {
    /// An error located at byte offset `at` of `text`.
    pub fn at(
        file: &Path,
        text: &str,
        at: usize,
        key: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        let (line, col) = line_col(text, at);
        Self {
            file: file.to_path_buf(),
            line,
            col,
            key: key.into(),
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// An error about the file as a whole (unreadable, badly named).
    pub fn whole_file(file: &Path, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            key: String::new(),
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        } else {
            write!(f, "{}: ", self.file.display())?;
        }
        write!(f, "{}", self.reason)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..text.floor_char_boundary(at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The closest candidate to `word` by edit distance, if close enough to be
/// a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    // Optimal string alignment distance: insert, delete, substitute, and
    // swap two adjacent characters ("memroy" vs "memory" is one edit).
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before_prev: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut cur = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            let substitution = prev[j] + usize::from(a[i] != b[j]);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                cur[j + 1] = cur[j + 1].min(before_prev[j - 1] + 1);
            }
        }
        before_prev = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}
