//! A body's transfer encoding, chosen and done here: 7bit, quoted-printable
//! or base64, with CRLF line ends.

use lettre::message::header::ContentTransferEncoding;
use lettre::message::Body;

/// Bytes quoted-printable writes as they are: printable ASCII but `=`.
const PRINTABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'!';
    while b <= b'~' {
        t[b as usize] = b != b'=';
        b += 1;
    }
    t
};

/// A body for lettre, with its transfer encoding chosen and done here:
/// `7bit` when it is ASCII with lines of at most 76 octets, else
/// quoted-printable when at most a third of its bytes need escaping (text
/// in a Latin script), else base64 (left to lettre). Line ends become CRLF.
///
/// lettre chooses the same way, but first inserts each missing CR in place,
/// moving the rest of the body every time.
pub(super) fn body(text: String) -> Body {
    let bytes = text.as_bytes();
    let mut long = false;
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', bytes).chain([bytes.len()]) {
        let line = &bytes[start..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        long |= line.len() > 76;
        start = nl + 1;
    }
    let escapes = if bytes.is_ascii() {
        0
    } else {
        bytes.iter().filter(|&&b| !b.is_ascii()).count()
    };
    if escapes == 0 && !long {
        return Body::dangerous_pre_encoded(
            crlf(text).into_bytes(),
            ContentTransferEncoding::SevenBit,
        );
    }
    if escapes <= bytes.len() / 3 {
        return Body::dangerous_pre_encoded(
            quoted_printable(bytes),
            ContentTransferEncoding::QuotedPrintable,
        );
    }
    Body::new_with_encoding(text, ContentTransferEncoding::Base64)
        .unwrap_or_else(|_| unreachable!("any text can be base64-encoded"))
}

/// Quoted-printable (RFC 2045, 6.7) of a text: printable ASCII as is,
/// everything else (and `=`, and a space or tab that ends a line) as `=XX`,
/// LF or CRLF as a CRLF line end, and soft line breaks (`=` CRLF) that keep
/// every encoded line within 76 characters. Runs of printable bytes are
/// copied at once.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 16 + 16);
    let mut start = 0;
    while start <= text.len() {
        let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |i| start + i);
        let line = &text[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        quoted_printable_line(line, &mut out);
        if end == text.len() {
            break;
        }
        out.extend_from_slice(b"\r\n");
        start = end + 1;
    }
    out
}

/// One line of [`quoted_printable`], without its line end.
fn quoted_printable_line(line: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Content of an encoded line, before a soft break's `=`; the line's own
    // last character may take the 76th column.
    const MAX: usize = 75;
    let literal = |i: usize| {
        let b = line[i];
        PRINTABLE[usize::from(b)] || (matches!(b, b' ' | b'\t') && i + 1 < line.len())
    };
    let (mut col, mut i) = (0, 0);
    while i < line.len() {
        // A run of literal bytes that fits on the encoded line.
        let room = (MAX - col).min(line.len() - i);
        let run = (i..i + room).find(|&j| !literal(j)).unwrap_or(i + room) - i;
        out.extend_from_slice(&line[i..i + run]);
        col += run;
        i += run;
        if i == line.len() {
            break;
        }
        let width = if literal(i) { 1 } else { 3 };
        let last = i + 1 == line.len();
        if col + width > MAX && !(last && col + width <= MAX + 1) {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        if width == 1 {
            out.push(line[i]);
        } else {
            let b = line[i];
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        col += width;
        i += 1;
    }
}

/// The text with CRLF line ends, in one pass.
fn crlf(text: String) -> String {
    let bytes = text.as_bytes();
    let Some(first) = memchr::memchr_iter(b'\n', bytes).find(|&i| i == 0 || bytes[i - 1] != b'\r')
    else {
        return text;
    };
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 2);
    out.push_str(&text[..first]);
    let mut start = first;
    for i in memchr::memchr_iter(b'\n', &bytes[first..]).map(|i| i + first) {
        if i == 0 || bytes[i - 1] != b'\r' {
            out.push_str(&text[start..i]);
            out.push_str("\r\n");
            start = i + 1;
        }
    }
    out.push_str(&text[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_lines_stay_within_76_characters_and_escape_what_they_must() {
        let input = format!(
            "{}\r\nend with space \nend with tab\t\na=b\r\nbare\rcr {}",
            "é".repeat(60),
            "y".repeat(200)
        );
        let out = String::from_utf8(quoted_printable(input.as_bytes())).unwrap();
        for line in out.split("\r\n") {
            assert!(line.len() <= 76, "{} characters: {line:?}", line.len());
            assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
        }
        assert!(out.contains("end with space=20\r\n"), "{out}");
        assert!(out.contains("end with tab=09\r\n"), "{out}");
        assert!(out.contains("a=3Db\r\n"), "{out}");
        assert!(out.contains("bare=0Dcr"), "{out}");
        assert!(out.starts_with("=C3=A9"), "{out}");
        assert!(out.bytes().all(|b| b.is_ascii()));
    }

    #[test]
    fn line_ends_become_crlf_once() {
        assert_eq!(crlf("a\nb\r\nc\n".into()), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf("\nx".into()), "\r\nx");
        assert_eq!(crlf("no line end".into()), "no line end");
        assert_eq!(crlf("ü\n\n".into()), "ü\r\n\r\n");
    }
}
