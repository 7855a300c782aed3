//! Relaxed canonicalization (RFC 6376, 3.4.2 and 3.4.4) of the formatted
//! message: its header block split into fields, each field relaxed, the
//! body's hash.

use aws_lc_rs::digest::{self, SHA256};

/// Header block (each field with its CRLF) and body of a formatted message.
pub(super) fn split_message(message: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no blank line between header and body")?;
    Ok((&message[..end + 2], &message[end + 4..]))
}

/// The header fields of a header block: (name, field without its final
/// CRLF, continuation lines included).
pub(super) fn header_fields(block: &[u8]) -> Vec<(&str, &[u8])> {
    let mut fields: Vec<(&str, &[u8])> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < block.len() {
        if block[i] == b'\r' && block[i + 1] == b'\n' {
            let next = block.get(i + 2);
            if !matches!(next, Some(b' ' | b'\t')) {
                let field = &block[start..i];
                let name = field
                    .iter()
                    .position(|&b| b == b':')
                    .and_then(|c| std::str::from_utf8(&field[..c]).ok())
                    .map(|n| n.trim_end_matches([' ', '\t']))
                    .unwrap_or_default();
                fields.push((name, field));
                start = i + 2;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    fields
}

/// Relaxed header canonicalization (RFC 6376, 3.4.2) of one field, CRLF
/// appended: name in lower case, continuation lines unfolded, runs of
/// whitespace made one space, whitespace around the colon and at the end
/// removed.
pub(super) fn relaxed_header(field: &[u8], out: &mut Vec<u8>) {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let name = &field[..colon];
    let name_end = name
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |p| p + 1);
    out.extend(name[..name_end].iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let mut space = false;
    let mut started = false;
    for &b in field.get(colon + 1..).unwrap_or_default() {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = started,
            _ => {
                if space {
                    out.push(b' ');
                    space = false;
                }
                started = true;
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// SHA-256 of the relaxed canonical body (RFC 6376, 3.4.4): whitespace at
/// line ends removed, runs of whitespace made one space, empty lines at the
/// end dropped, a last line without CRLF given one.
pub(super) fn relaxed_body_hash(body: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&SHA256);
    let mut empty_lines = 0usize;
    let mut line = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (raw, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(p) => (&rest[..p], &rest[p + 2..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        line.clear();
        let mut space = false;
        for &b in raw {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    line.push(b' ');
                    space = false;
                }
                line.push(b);
            }
        }
        if line.is_empty() {
            // Written only if a non-empty line follows.
            empty_lines += 1;
            continue;
        }
        for _ in 0..empty_lines {
            ctx.update(b"\r\n");
        }
        empty_lines = 0;
        ctx.update(&line);
        ctx.update(b"\r\n");
    }
    ctx.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_canonicalization_matches_the_rfc_6376_example() {
        // RFC 6376, 3.4.5.
        let message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (headers, body) = split_message(message).unwrap();
        let mut out = Vec::new();
        for (_, raw) in header_fields(headers) {
            relaxed_header(raw, &mut out);
        }
        assert_eq!(out, b"a:X\r\nb:Y Z\r\n");
        assert_eq!(
            relaxed_body_hash(body).as_ref(),
            digest::digest(&SHA256, b" C\r\nD E\r\n").as_ref()
        );
        // An empty body, or one of empty lines, hashes as nothing; a last
        // line without CRLF gets one.
        let empty = digest::digest(&SHA256, b"");
        assert_eq!(relaxed_body_hash(b"").as_ref(), empty.as_ref());
        assert_eq!(relaxed_body_hash(b"\r\n \r\n").as_ref(), empty.as_ref());
        assert_eq!(
            relaxed_body_hash(b"x  ").as_ref(),
            digest::digest(&SHA256, b"x\r\n").as_ref()
        );
    }
}
