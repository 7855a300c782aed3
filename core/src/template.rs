//! Templates of a request, compiled once and rendered per recipient.
//!
//! The engine is MiniJinja, sandboxed: no loader (so no file access), no
//! network, a fuel limit so a hostile template cannot spin forever, and HTML
//! auto-escaping for the html body. Every rendered value that becomes a
//! header is checked for CR/LF so a recipient variable cannot inject headers.
//!
//! Each recipient's context is its `vars`, plus `email` and `name`.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};

use crate::address::is_header_safe;
use crate::message::Content;

/// Instructions a single render may spend before it is stopped.
const FUEL: u64 = 2_000_000;

/// Largest rendered body (text or html) accepted: a template cannot make a
/// sender allocate without bound however it multiplies its output.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest rendered header value (subject, extra headers, unsubscribe URL).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// A buffer that refuses to grow past its limit.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "output larger than {} bytes",
                self.limit
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Headers a request may not set itself: mailpipe writes them.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "return-path",
    "sender",
    // mailpipe signs; a request never brings its own signature or the
    // identifiers the intake relies on.
    "dkim-signature",
    "x-mailpipe-id",
];

/// Why templates could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name} does not compile: {detail}")]
    Syntax { name: String, detail: String },
    #[error("template {name} failed to render: {detail}")]
    Render { name: String, detail: String },
    #[error("header {0:?} is not a valid header name")]
    InvalidHeaderName(String),
    #[error("header {0:?} is set by mailpipe and cannot be overridden")]
    ReservedHeader(String),
    #[error("rendered {0} contains a line break (header injection refused)")]
    HeaderInjection(String),
    #[error("the request has neither a text nor an html body")]
    NoBody,
}

/// What one recipient's message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
    pub unsubscribe_url: Option<String>,
}

/// A request's templates, compiled.
pub struct Compiled {
    env: Environment<'static>,
    has_text: bool,
    has_html: bool,
    has_unsubscribe: bool,
    headers: Vec<String>,
}

fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 76 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl Compiled {
    /// Compiles every template of a request; fails on the first syntax error.
    pub fn compile(content: &Content) -> Result<Self, TemplateError> {
        if content.text.is_none() && content.html.is_none() {
            return Err(TemplateError::NoBody);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        let mut add = |name: String, source: &str| {
            env.add_template_owned(name.clone(), source.to_string())
                .map_err(|e| TemplateError::Syntax {
                    name,
                    detail: e.to_string(),
                })
        };
        // A header template with a literal line break would fail for every
        // recipient: refuse it once, for the whole request.
        let headerish = std::iter::once(("subject.txt".to_string(), content.subject.as_str()))
            .chain(
                content
                    .unsubscribe_url
                    .iter()
                    .map(|u| ("unsubscribe.txt".to_string(), u.as_str())),
            )
            .chain(
                content
                    .headers
                    .iter()
                    .map(|(n, v)| (format!("header:{n}"), v.as_str())),
            );
        for (name, source) in headerish {
            if !is_header_safe(source) {
                return Err(TemplateError::HeaderInjection(name));
            }
        }
        add("subject.txt".into(), &content.subject)?;
        if let Some(t) = &content.text {
            add("body.txt".into(), t)?;
        }
        if let Some(h) = &content.html {
            add("body.html".into(), h)?;
        }
        if let Some(u) = &content.unsubscribe_url {
            add("unsubscribe.txt".into(), u)?;
        }
        let mut headers = Vec::new();
        for (name, value) in &content.headers {
            if !is_valid_header_name(name) {
                return Err(TemplateError::InvalidHeaderName(name.clone()));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(TemplateError::ReservedHeader(name.clone()));
            }
            add(format!("header:{name}"), value)?;
            headers.push(name.clone());
        }
        Ok(Self {
            env,
            has_text: content.text.is_some(),
            has_html: content.html.is_some(),
            has_unsubscribe: content.unsubscribe_url.is_some(),
            headers,
        })
    }

    fn render_one(
        &self,
        name: &str,
        ctx: &minijinja::Value,
        limit: usize,
    ) -> Result<String, TemplateError> {
        let err = |e: minijinja::Error| TemplateError::Render {
            name: name.to_string(),
            detail: e.to_string(),
        };
        let mut out = Capped {
            buf: Vec::new(),
            limit,
        };
        self.env
            .get_template(name)
            .map_err(err)?
            .render_captured_to(ctx, &mut out)
            .map_err(err)?;
        String::from_utf8(out.buf).map_err(|e| TemplateError::Render {
            name: name.to_string(),
            detail: e.to_string(),
        })
    }

    fn render_header(&self, name: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        let v = self.render_one(name, ctx, MAX_HEADER_BYTES)?;
        let v = v.trim().to_string();
        if !is_header_safe(&v) {
            return Err(TemplateError::HeaderInjection(name.to_string()));
        }
        Ok(v)
    }

    /// Renders the message for one recipient.
    pub fn render(
        &self,
        email: &str,
        name: Option<&str>,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered, TemplateError> {
        let mut ctx: BTreeMap<String, serde_json::Value> =
            vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        ctx.insert("email".into(), email.into());
        ctx.insert(
            "name".into(),
            name.map(Into::into).unwrap_or(serde_json::Value::Null),
        );
        let ctx = minijinja::Value::from_serialize(&ctx);

        let subject = self.render_header("subject.txt", &ctx)?;
        let text = if self.has_text {
            Some(self.render_one("body.txt", &ctx, MAX_BODY_BYTES)?)
        } else {
            None
        };
        let html = if self.has_html {
            Some(self.render_one("body.html", &ctx, MAX_BODY_BYTES)?)
        } else {
            None
        };
        let unsubscribe_url = if self.has_unsubscribe {
            Some(self.render_header("unsubscribe.txt", &ctx)?)
        } else {
            None
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for h in &self.headers {
            headers.push((h.clone(), self.render_header(&format!("header:{h}"), &ctx)?));
        }
        Ok(Rendered {
            subject,
            text,
            html,
            headers,
            unsubscribe_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            from: "News <news@example.com>".into(),
            reply_to: None,
            subject: "Hello {{ name or 'friend' }}".into(),
            text: Some("Code {{ code }} for {{ email }}".into()),
            html: Some("<p>Hi {{ name }}</p>".into()),
            headers: [("X-Campaign".to_string(), "spring-{{ code }}".to_string())].into(),
            unsubscribe_url: Some("https://example.com/u?e={{ email | urlencode }}".into()),
        }
    }

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn renders_personalized_parts() {
        let c = Compiled::compile(&content()).unwrap();
        let r = c
            .render(
                "a+b@example.com",
                Some("Ann"),
                &vars(serde_json::json!({"code": 42})),
            )
            .unwrap();
        assert_eq!(r.subject, "Hello Ann");
        assert_eq!(r.text.as_deref(), Some("Code 42 for a+b@example.com"));
        assert_eq!(r.html.as_deref(), Some("<p>Hi Ann</p>"));
        assert_eq!(r.headers, vec![("X-Campaign".into(), "spring-42".into())]);
        assert_eq!(
            r.unsubscribe_url.as_deref(),
            Some("https://example.com/u?e=a%2Bb%40example.com")
        );
    }

    #[test]
    fn html_body_is_escaped() {
        let c = Compiled::compile(&content()).unwrap();
        let r = c
            .render("a@example.com", Some("<script>"), &Default::default())
            .unwrap();
        assert_eq!(r.html.as_deref(), Some("<p>Hi &lt;script&gt;</p>"));
    }

    #[test]
    fn header_injection_through_variables_is_refused() {
        let c = Compiled::compile(&content()).unwrap();
        let err = c
            .render(
                "a@example.com",
                Some("x\r\nBcc: victim@example.com"),
                &Default::default(),
            )
            .unwrap_err();
        assert_eq!(err, TemplateError::HeaderInjection("subject.txt".into()));
    }

    #[test]
    fn reserved_and_invalid_header_names_are_refused() {
        let mut c = content();
        c.headers = [("Bcc".to_string(), "x@example.com".to_string())].into();
        assert!(matches!(
            Compiled::compile(&c),
            Err(TemplateError::ReservedHeader(_))
        ));
        c.headers = [("X Bad".to_string(), "v".to_string())].into();
        assert!(matches!(
            Compiled::compile(&c),
            Err(TemplateError::InvalidHeaderName(_))
        ));
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let mut c = content();
        c.subject = "Hello {{ name ".into();
        assert!(matches!(
            Compiled::compile(&c),
            Err(TemplateError::Syntax { .. })
        ));
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let mut c = content();
        c.text = Some(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                .into(),
        );
        let compiled = Compiled::compile(&c).unwrap();
        assert!(matches!(
            compiled.render("a@example.com", None, &Default::default()),
            Err(TemplateError::Render { .. })
        ));
    }

    #[test]
    fn output_amplification_is_stopped() {
        let mut c = content();
        c.text =
            Some(include_str!("../../fuzz/regressions/template/oom-output-amplification").into());
        let compiled = Compiled::compile(&c);
        if let Ok(compiled) = compiled {
            assert!(matches!(
                compiled.render("a@example.com", None, &Default::default()),
                Err(TemplateError::Render { .. })
            ));
        }
        c.text = Some("{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}".into());
        let compiled = Compiled::compile(&c).unwrap();
        assert!(matches!(
            compiled.render("a@example.com", None, &Default::default()),
            Err(TemplateError::Render { .. })
        ));
        // Output just under the limit still renders.
        c.text = Some("{{ 'y' * 1000000 }}".into());
        let compiled = Compiled::compile(&c).unwrap();
        let r = compiled
            .render("a@example.com", None, &Default::default())
            .unwrap();
        assert_eq!(r.text.map(|t| t.len()), Some(1_000_000));
    }

    #[test]
    fn literal_line_breaks_in_header_templates_are_refused_at_compile_time() {
        let mut c = content();
        c.headers = [("X-Note".to_string(), "a\r\nBcc: x@example.com".to_string())].into();
        assert!(matches!(
            Compiled::compile(&c),
            Err(TemplateError::HeaderInjection(_))
        ));
    }

    #[test]
    fn templates_cannot_include_files() {
        let mut c = content();
        c.text = Some("{% include '/etc/passwd' %}".into());
        let compiled = Compiled::compile(&c).unwrap();
        assert!(compiled
            .render("a@example.com", None, &Default::default())
            .is_err());
    }

    #[test]
    fn a_body_is_required() {
        let mut c = content();
        c.text = None;
        c.html = None;
        assert!(matches!(Compiled::compile(&c), Err(TemplateError::NoBody)));
    }
}
