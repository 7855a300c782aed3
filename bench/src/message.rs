//! Personalized multipart messages rendered by the benchmark tool itself,
//! for what submits without mailpipe (`inject --render`, `client`): the
//! templates of `publish` filled in for recipient i (name, plan, code), as
//! text + html `multipart/alternative` with headers like mailpipe's, so
//! that Postfix and the TLS client carry messages of the same shape and
//! size as mailpipe's (without a DKIM signature).

use serde_json::Value;

use crate::publish::templates;

/// Recipient i's message for `rcpt`, CRLF line ends, dot-stuffed and
/// ended by the final `.` line: ready to follow a 354.
pub fn render(i: u64, rcpt: &str, size: usize, tpl: &Value) -> String {
    let name = format!("User {i}");
    let plan = if i.is_multiple_of(3) { "pro" } else { "free" };
    let code = format!("C{i:07}");
    let fill = |s: &str| {
        s.replace("{{ name }}", &name)
            .replace("{{ plan }}", plan)
            .replace("{{ code }}", &code)
    };
    let get = |k: &str| tpl.get(k).and_then(Value::as_str).unwrap_or_default();
    let boundary = format!("=_bench_{i:012x}");
    let mut m = String::with_capacity(size + 512);
    m.push_str("From: ACME <news@acme.example>\n");
    m.push_str(&format!("To: {name} <{rcpt}>\n"));
    m.push_str("Reply-To: support@acme.example\n");
    m.push_str(&format!("Subject: {}\n", fill(get("subject"))));
    m.push_str("Date: Mon, 23 Nov 2026 10:00:00 +0000\n");
    m.push_str(&format!("Message-ID: <bench-{i}@bench.example>\n"));
    m.push_str(&format!("X-Campaign: bench-{plan}\n"));
    m.push_str(&format!(
        "List-Unsubscribe: <https://acme.example/unsubscribe?u={}>\n",
        rcpt.replace('@', "%40")
    ));
    m.push_str("List-Unsubscribe-Post: List-Unsubscribe=One-Click\n");
    m.push_str("MIME-Version: 1.0\n");
    m.push_str(&format!(
        "Content-Type: multipart/alternative; boundary=\"{boundary}\"\n\n"
    ));
    for (ctype, body) in [("text/plain", get("text")), ("text/html", get("html"))] {
        m.push_str(&format!(
            "--{boundary}\nContent-Type: {ctype}; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
        ));
        m.push_str(&fill(body));
        m.push('\n');
    }
    m.push_str(&format!("--{boundary}--\n"));
    let mut out = String::with_capacity(m.len() + m.len() / 40 + 8);
    for line in m.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

/// The templates `render` fills in for messages of about `size` bytes.
pub fn message_templates(size: usize) -> Value {
    templates(size)
}
