//! `application/x-www-form-urlencoded` bodies (what an HTML `<form method=post>` sends) and
//! the `Cookie` request header. **Pure**: bytes in, owned strings out, never a panic.

/// The fields of a form body in order. `+` is a space and `%XX` a byte; a field whose bytes
/// are not UTF-8 after decoding, or a malformed escape, makes the whole body invalid, so a
/// handler never acts on half of what the browser meant.
pub fn parse(body: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
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

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
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
        let f = parse("jid=alice%40example.org&password=a+b%26c%3D&empty=&flag").unwrap();
        assert_eq!(get(&f, "jid"), Some("alice@example.org"));
        assert_eq!(get(&f, "password"), Some("a b&c="));
        assert_eq!(get(&f, "empty"), Some(""));
        assert_eq!(get(&f, "flag"), Some(""));
        assert_eq!(get(&f, "missing"), None);
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(
            get(&parse("n=%C3%A9t%C3%A9").unwrap(), "n"),
            Some("été"),
            "UTF-8 across escapes"
        );
    }

    #[test]
    fn malformed_bodies_are_refused_whole() {
        for bad in ["a=%", "a=%4", "a=%zz", "a=%FF", "ok=1&b=%C3"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn encode_round_trips() {
        for s in ["alice@example.org", "a b/c?d=e&f", "été", ""] {
            let e = encode(s);
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            assert_eq!(decode(&e).as_deref(), Some(s));
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
