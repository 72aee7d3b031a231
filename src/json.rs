//! JSON output without a JSON library: kith only writes small documents (`kith check --json`,
//! host-meta.json) whose shape the code spells out; what needs care is the strings.

use std::fmt::Write as _;

/// A JSON string literal (RFC 8259 §7).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped() {
        assert_eq!(super::string("a\u{1}\n\"\\é"), "\"a\\u0001\\n\\\"\\\\é\"");
    }
}
