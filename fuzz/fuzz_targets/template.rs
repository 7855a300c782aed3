//! Template compilation and rendering with hostile templates and hostile
//! recipient data. Compile and render must return (an error is fine) within
//! the fuel budget, and a rendered header value (subject, extra header,
//! unsubscribe URL) never carries a line break.
//!
//! Input: fields separated by NUL bytes, so that seeds and the dictionary
//! (`fuzz/dict/template.dict`) are plain template text:
//! `subject \0 text \0 html \0 header value \0 unsubscribe url \0 name \0 vars`
//! where `vars` is a JSON object (anything else counts as no vars). Missing
//! fields are empty; an empty html / header / unsubscribe field is absent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpipe_core::message::Content;
use mailpipe_core::template::Compiled;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut f = text.split('\0');
    let mut next = || f.next().unwrap_or("").to_string();
    let (subject, body, html, header, unsubscribe, name, vars) =
        (next(), next(), next(), next(), next(), next(), next());
    let opt = |s: String| (!s.is_empty()).then_some(s);
    let content = Content {
        from: "News <news@example.com>".into(),
        reply_to: None,
        subject,
        text: Some(body),
        html: opt(html),
        headers: opt(header)
            .map(|v| ("X-Fuzz".to_string(), v))
            .into_iter()
            .collect(),
        unsubscribe_url: opt(unsubscribe),
    };
    let Ok(compiled) = Compiled::compile(&content) else {
        return;
    };
    let vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&vars).unwrap_or_default();
    let name = opt(name);
    let Ok(r) = compiled.render("rcpt@example.com", name.as_deref(), &vars) else {
        return;
    };
    let safe = |v: &str| !v.contains(['\r', '\n', '\0']);
    assert!(safe(&r.subject), "subject {:?}", r.subject);
    for (n, v) in &r.headers {
        assert!(safe(v), "header {n}: {v:?}");
    }
    if let Some(u) = &r.unsubscribe_url {
        assert!(safe(u), "unsubscribe {u:?}");
    }
});
