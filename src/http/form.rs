//! `application/x-www-form-urlencoded` bodies (what an HTML `<form method=post>` sends) and
//! the `Cookie` request header. **Pure**: bytes in, owned strings out, never a panic.

/// The fields of a form body in order (WHATWG URL, "application/x-www-form-urlencoded
/// parsing"): `&`-separated `name=value`, `+` is a space, `%XX` a byte, and a `%` not
/// followed by two hex digits stays itself, as in browsers. A field whose bytes are not UTF-8
/// after decoding makes the whole body invalid (`None`), so a handler never acts on half of
/// what the browser meant.
pub fn parse(body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        out.push((decode(k)?, decode(v)?));
    }
    Some(out)
}

/// The first value of `name` in parsed fields.
pub fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn decode(s: &[u8]) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                s.get(i + 1).and_then(|&b| hex(b)),
                s.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes `s` for a URL query value or path segment: everything but RFC 3986
/// unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let f = parse(b"jid=alice%40example.org&password=a+b%26c%3D&empty=&flag").unwrap();
        assert_eq!(get(&f, "jid"), Some("alice@example.org"));
        assert_eq!(get(&f, "password"), Some("a b&c="));
        assert_eq!(get(&f, "empty"), Some(""));
        assert_eq!(get(&f, "flag"), Some(""));
        assert_eq!(get(&f, "missing"), None);
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(
            get(&parse(b"n=%C3%A9t%C3%A9").unwrap(), "n"),
            Some("\u{e9}t\u{e9}"),
            "UTF-8 across escapes"
        );
        let f = parse(b"username=al+ice%40x&password=p%C3%A4ss%").unwrap();
        assert_eq!(get(&f, "username"), Some("al ice@x"));
        assert_eq!(get(&f, "password"), Some("p\u{e4}ss%"));
    }

    #[test]
    fn a_stray_percent_stays_and_non_utf8_refuses_the_body() {
        for (stray, value) in [
            ("a=%", "%"),
            ("a=%4", "%4"),
            ("a=%zz", "%zz"),
            ("a=%+1", "% 1"),
        ] {
            assert_eq!(
                get(&parse(stray.as_bytes()).unwrap(), "a"),
                Some(value),
                "{stray}"
            );
        }
        for bad in [&b"a=%FF"[..], b"ok=1&b=%C3", b"a=\xff"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encode_round_trips() {
        for s in ["alice@example.org", "a b/c?d=e&f", "été", ""] {
            let e = encode(s);
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            assert_eq!(decode(e.as_bytes()).as_deref(), Some(s));
        }
    }

    #[test]
    fn cookies() {
        let h = "theme=dark; kith_admin=abc123; other=\"q\"";
        assert_eq!(cookie(h, "kith_admin"), Some("abc123"));
        assert_eq!(cookie(h, "other"), Some("q"));
        assert_eq!(cookie(h, "kith"), None);
        assert_eq!(cookie("", "x"), None);
    }
}
