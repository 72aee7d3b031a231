//! QR codes of invite links and `xmpp:` URIs, drawn two ways from one code: Unicode half
//! blocks for the terminal (`kith invite`) and an inline SVG for the web page. qrcodegen does
//! the encoding; no image library is needed. Pure.

use qrcodegen::{QrCode, QrCodeEcc};

/// Light modules around the code; scanners need a margin (the standard asks for 4, 2 is
/// enough on a screen and keeps the terminal picture small).
const QUIET: i32 = 2;

fn encode(text: &str) -> Option<QrCode> {
    // Medium error correction: readable from a slightly blurry phone photo of a screen.
    QrCode::encode_text(text, QrCodeEcc::Medium).ok()
}

/// The code as text: each character is two modules stacked (`▀`, `▄`, `█`, space), light
/// modules drawn as block characters, the way `qrencode -t UTF8` does for terminals with a
/// dark background. `None` when the text is too long for a QR code.
pub fn terminal(text: &str) -> Option<String> {
    let qr = encode(text)?;
    let n = qr.size();
    let light = |x: i32, y: i32| !qr.get_module(x, y); // outside the code: light
    let mut out = String::new();
    let mut y = -QUIET;
    while y < n + QUIET {
        for x in -QUIET..n + QUIET {
            out.push(match (light(x, y), light(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    Some(out)
}

/// The code as an SVG element, one path for the dark modules on a white square; it scales
/// with CSS (`width`), `shape-rendering` keeps the edges crisp.
pub fn svg(text: &str) -> Option<String> {
    let qr = encode(text)?;
    let n = qr.size();
    let side = n + 2 * QUIET;
    let mut path = String::new();
    for y in 0..n {
        for x in 0..n {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{} {}h1v1h-1z", x + QUIET, y + QUIET));
            }
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" \
         shape-rendering=\"crispEdges\" class=\"qr\" role=\"img\" aria-label=\"QR code\">\
         <rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_picture_is_square_in_modules() {
        let t = terminal("xmpp:example.org?register;preauth=abcdefghijklmnopqrstuvwx").unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let width = lines[0].chars().count();
        // Two modules per line: lines ≈ width / 2 (rounded up).
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // The quiet zone is light: the first line is all full blocks.
        assert!(lines[0].chars().all(|c| c == '█'));
        // A finder pattern's dark border shows as something other than full blocks.
        assert!(lines[1].contains(' ') || lines[1].contains('▄') || lines[1].contains('▀'));
    }

    #[test]
    fn svg_has_only_our_markup() {
        let s = svg("https://example.org/invite/TOKEN").unwrap();
        assert!(s.starts_with("<svg ") && s.ends_with("</svg>"));
        assert!(s.contains("<path d=\"M"));
        assert!(!s.contains("TOKEN"), "the text is encoded, not embedded");
    }

    #[test]
    fn too_long_is_none() {
        assert!(terminal(&"x".repeat(5000)).is_none());
        assert!(svg(&"x".repeat(5000)).is_none());
    }
}
