//! Command lines of the bounce intake's SMTP server, parsed.

use super::MAX_PATH;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    Ehlo(String),
    Helo(String),
    /// `from` is empty for the null sender `<>`.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    /// A known command this server does not offer (EXPN, STARTTLS, AUTH,
    /// BDAT, …).
    NotImplemented,
}

/// Parses a command line (line end included or not); `Err` is the reply.
pub(super) fn parse_command(line: &[u8]) -> Result<Command, &'static str> {
    const UNRECOGNIZED: &str = "500 5.5.2 Syntax error, command unrecognized";
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| UNRECOGNIZED)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(UNRECOGNIZED);
    }
    let line = line.trim_end();
    let (verb, args) = match line.split_once([' ', '\t']) {
        Some((v, a)) => (v, a.trim_start()),
        None => (line, ""),
    };
    let no_args = |command: Command| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err("501 5.5.4 Syntax error: no parameters allowed")
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" if args.is_empty() => Err("501 5.5.4 Syntax: EHLO hostname"),
        "EHLO" => Ok(Command::Ehlo(args.to_string())),
        "HELO" => Ok(Command::Helo(args.to_string())),
        "MAIL" => {
            let rest =
                strip_prefix_ci(args, "FROM:").ok_or("501 5.5.4 Syntax: MAIL FROM:<address>")?;
            let (from, params) = parse_path(rest).ok_or("501 5.1.7 Bad sender address syntax")?;
            let mut size = None;
            for param in params.split_whitespace() {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                match key.to_ascii_uppercase().as_str() {
                    "SIZE" => {
                        size = Some(
                            value
                                .parse::<u64>()
                                .map_err(|_| "501 5.5.4 Bad SIZE parameter")?,
                        )
                    }
                    "BODY"
                        if value.eq_ignore_ascii_case("7BIT")
                            || value.eq_ignore_ascii_case("8BITMIME") => {}
                    "SMTPUTF8" if value.is_empty() => {}
                    _ => return Err("555 5.5.4 Unsupported MAIL parameter"),
                }
            }
            Ok(Command::Mail { from, size })
        }
        "RCPT" => {
            let rest = strip_prefix_ci(args, "TO:").ok_or("501 5.5.4 Syntax: RCPT TO:<address>")?;
            let (to, params) = parse_path(rest).ok_or("501 5.1.3 Bad recipient address syntax")?;
            if to.is_empty() {
                return Err("501 5.1.3 Bad recipient address syntax");
            }
            if !params.trim().is_empty() {
                return Err("555 5.5.4 Unsupported RCPT parameter");
            }
            Ok(Command::Rcpt { to })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        // NOOP and HELP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" | "STARTTLS" | "AUTH" | "BDAT" | "TURN" | "ETRN" | "ATRN" | "SEND" | "SOML"
        | "SAML" => Ok(Command::NotImplemented),
        _ => Err(UNRECOGNIZED),
    }
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s[prefix.len()..].trim_start())
}

/// Splits `<address> params` into the address (source route dropped, as
/// RFC 5321 §4.1.1.3 allows) and the rest. Tolerates a missing pair of
/// angle brackets, as Postfix does by default.
fn parse_path(s: &str) -> Option<(String, &str)> {
    let (path, rest) = if let Some(inner) = s.strip_prefix('<') {
        let mut quoted = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let end = s.find([' ', '\t']).unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        (&s[..end], &s[end..])
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    if path.len() > MAX_PATH || path.contains(['<', '>']) {
        return None;
    }
    // Whitespace only inside a quoted local part.
    let mut quoted = false;
    for c in path.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return None,
            _ => {}
        }
    }
    Some((path.to_string(), rest.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_give_the_reply() {
        use Command::*;
        let ok: &[(&str, Command)] = &[
            ("EHLO mx.example\r\n", Ehlo("mx.example".into())),
            ("helo mx\n", Helo("mx".into())),
            (
                "MAIL FROM:<>\r\n",
                Mail {
                    from: String::new(),
                    size: None,
                },
            ),
            (
                "mail from: <a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8",
                Mail {
                    from: "a@b.example".into(),
                    size: Some(1000),
                },
            ),
            (
                "MAIL FROM:<@relay.example:a@b.example>",
                Mail {
                    from: "a@b.example".into(),
                    size: None,
                },
            ),
            (
                "MAIL FROM:a@b.example",
                Mail {
                    from: "a@b.example".into(),
                    size: None,
                },
            ),
            (
                "RCPT TO:<\"x y\"@b.example>",
                Rcpt {
                    to: "\"x y\"@b.example".into(),
                },
            ),
            (
                "RCPT TO:<bounces+tok@bounce.example>",
                Rcpt {
                    to: "bounces+tok@bounce.example".into(),
                },
            ),
            (
                "RCPT TO:<Postmaster>",
                Rcpt {
                    to: "Postmaster".into(),
                },
            ),
            ("DATA", Data),
            ("rset", Rset),
            ("NOOP hello", Noop),
            ("VRFY someone", Vrfy),
            ("QUIT", Quit),
            ("STARTTLS", NotImplemented),
            ("BDAT 10 LAST", NotImplemented),
        ];
        for (line, command) in ok {
            assert_eq!(
                parse_command(line.as_bytes()).as_ref(),
                Ok(command),
                "{line}"
            );
        }
        let err: &[(&[u8], &str)] = &[
            (b"EHLO", "501"),
            (b"MAIL TO:<a@b>", "501"),
            (b"MAIL FROM:<a@b", "501"),
            (b"MAIL FROM:<a b@c>", "501"),
            (b"MAIL FROM:<a@b> SIZE=big", "501"),
            (b"MAIL FROM:<a@b> RET=FULL", "555"),
            (b"MAIL FROM:<a@b>junk", "501"),
            (b"RCPT TO:<>", "501"),
            (b"RCPT TO:<a@b> NOTIFY=NEVER", "555"),
            (b"DATA now", "501"),
            (b"FROB", "500"),
            (b"", "500"),
            (b"\xff\xfe\x00binary", "500"),
            (b"NOOP \x00", "500"),
        ];
        for (line, code) in err {
            let reply = parse_command(line).expect_err("an error reply");
            assert!(
                reply.starts_with(code),
                "{:?}: {reply}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
