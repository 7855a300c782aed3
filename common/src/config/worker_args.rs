//! A worker binary's command line: `--config FILE`, `--help`, `--version`.

/// What a worker binary's command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum WorkerArgs {
    /// Run, with the configuration file given by `--config FILE`, if any.
    Run(Option<std::path::PathBuf>),
    /// Print this (help or version) and exit successfully.
    Print(String),
    /// A usage error: print this and exit with code 2.
    Usage(String),
}

/// Reads a worker binary's arguments (without the program name). A worker
/// takes only `--config FILE`; `--help` and `--version` answer and exit
/// instead of starting the worker, and anything else is a usage error.
pub fn parse_worker_args(
    name: &str,
    about: &str,
    args: impl IntoIterator<Item = String>,
) -> WorkerArgs {
    let mut config = None;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return WorkerArgs::Print(worker_help(name, about)),
            "-V" | "--version" => {
                return WorkerArgs::Print(format!("{name} {}\n", crate::metrics::this_version()))
            }
            "--config" => match args.next() {
                Some(v) => config = Some(v.into()),
                None => return WorkerArgs::Usage(format!("{name}: --config needs a file\n")),
            },
            other => match other.strip_prefix("--config=") {
                Some(v) => config = Some(v.into()),
                None => {
                    return WorkerArgs::Usage(format!(
                        "{name}: unexpected argument {other:?}\n\nUsage: {name} [--config FILE]\nFor more information, try '--help'.\n"
                    ))
                }
            },
        }
    }
    WorkerArgs::Run(config)
}

fn worker_help(name: &str, about: &str) -> String {
    format!(
        "{about}

Usage: {name} [--config FILE]

Options:
  --config FILE  YAML configuration file (or MAILPIPE_CONFIG=FILE); the
                 defaults apply to whatever it leaves out. With
                 MAILPIPE_CONFIG_DIR=DIR, DIR/base.yaml and
                 DIR/$MAILPIPE_ENV.yaml are read first
  -h, --help     Print this help and exit
  -V, --version  Print the version and exit

Every setting can also be given in the environment as MAILPIPE__SECTION__FIELD,
for example MAILPIPE__AMQP__URL or MAILPIPE__SENDER__CONCURRENCY.
The process serves /metrics, /healthz and /readyz on its `listen` address and
stops gracefully on SIGTERM or ctrl-c.
"
    )
}

/// The `--config FILE` argument of a worker binary, if given; answers
/// `--help` and `--version` and exits, and exits with code 2 on anything
/// else (see [`parse_worker_args`]).
pub fn worker_config_arg(name: &str, about: &str) -> Option<std::path::PathBuf> {
    match parse_worker_args(name, about, std::env::args().skip(1)) {
        WorkerArgs::Run(config) => config,
        WorkerArgs::Print(text) => {
            print!("{text}");
            std::process::exit(0)
        }
        WorkerArgs::Usage(text) => {
            eprint!("{text}");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_answers_help_and_version_and_refuses_unknown_arguments() {
        let parse = |args: &[&str]| {
            parse_worker_args("mailpipe-x", "about", args.iter().map(|a| a.to_string()))
        };
        let kind = |w: WorkerArgs| match w {
            WorkerArgs::Run(c) => format!("run {c:?}"),
            WorkerArgs::Print(t) if t.contains("Usage:") => "help".to_string(),
            WorkerArgs::Print(t) => format!("print {}", t.trim()),
            WorkerArgs::Usage(_) => "usage error".to_string(),
        };
        let version = format!("print mailpipe-x {}", crate::metrics::this_version());
        let table: &[(&[&str], &str)] = &[
            (&[], "run None"),
            (&["--config", "a.yaml"], "run Some(\"a.yaml\")"),
            (&["--config=b.yaml"], "run Some(\"b.yaml\")"),
            (&["--help"], "help"),
            (&["-h"], "help"),
            (&["--config", "a.yaml", "--help"], "help"),
            (&["--version"], &version),
            (&["-V"], &version),
            (&["--config"], "usage error"),
            (&["--verbose"], "usage error"),
            (&["run"], "usage error"),
        ];
        for (args, expected) in table {
            assert_eq!(kind(parse(args)), *expected, "{args:?}");
        }
    }
}
