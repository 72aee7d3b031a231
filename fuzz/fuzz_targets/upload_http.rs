//! The HTTP upload request path's pure parts (src/http/upload.rs, src/services/upload.rs):
//! the `/upload/ID/NAME` path, the `Range` header, `Content-Disposition`, media types and
//! the slot URL.
//!
//! Input: one control byte, then text split by NUL into a path, a Range header and a file
//! name. Invariants: no panic; a parsed id is 16..=64 URL-safe characters; a served range
//! lies inside the file; no CR, LF or NUL gets into a header we write; a slot URL's path
//! parses back to its id.
#![no_main]

use kith::http::upload::{content_disposition, parse_path, parse_range, same_media_type, Ranged};
use kith::services::upload::{file_url, valid_content_type, valid_file_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut parts = text.split('\0');
    let path = parts.next().unwrap_or("");
    let range = parts.next();
    let name = parts.next().unwrap_or("");
    let content_type = parts.next().unwrap_or("");

    if let Some(id) = parse_path(path) {
        assert!((16..=64).contains(&id.len()));
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    let size = match control % 4 {
        0 => 0,
        1 => 1,
        2 => u64::from(control),
        _ => u64::MAX,
    };
    if let Ranged::Part { start, end } = parse_range(range, size) {
        assert!(start <= end && end < size, "{start}..={end} of {size}");
    }

    if valid_content_type(content_type) {
        let header = content_disposition(content_type, name);
        assert!(
            !header.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "a control character in Content-Disposition: {header:?}"
        );
        assert!(same_media_type(Some(content_type), content_type));
    }

    if valid_file_name(name) {
        let id = "abcdefghijklmnop_-0123456789";
        let url = file_url("https://upload.example.test", id, name);
        let path = url
            .strip_prefix("https://upload.example.test")
            .unwrap_or("");
        assert_eq!(parse_path(path), Some(id), "{url}");
    }
});
