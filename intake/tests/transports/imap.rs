//! The IMAP poller against a throwaway Dovecot: mail is delivered into
//! the Maildir and what is left is read back from it, independently of the
//! poller's IMAP client.

use std::sync::Arc;
use std::time::Duration;

use mailpipe_common::config::{ImapSettings, TlsMode};
use mailpipe_intake::imap::{poll, poll_once, ImapError, ImapPoll, RoundOutcome};
use mailpipe_intake::Source;
use mailpipe_tests::dovecot::{Dovecot, DovecotOptions};
use mailpipe_tests::wait_for;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::helpers::Recorder;

fn settings(dovecot: &Dovecot, archive: Option<&str>) -> ImapPoll {
    mailpipe_common::telemetry::init_for_tests();
    ImapPoll {
        imap: ImapSettings {
            host: "127.0.0.1".into(),
            port: dovecot.port,
            tls: TlsMode::None,
            username: dovecot.user.clone(),
            password: SecretString::from(dovecot.password.clone()),
            mailbox: "INBOX".into(),
            poll_interval: Duration::from_millis(100),
            archive_mailbox: archive.map(str::to_string),
        },
        max_message_bytes: 64 * 1024,
        timeout: Duration::from_secs(5),
    }
}

/// A bounce-like message, distinct per `i`, with a line starting with a
/// dot and CRLF line ends.
fn mail(i: usize) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.remote.test\r\nTo: bounces@bounce.test\r\n\
         Subject: bounce {i}\r\nMessage-ID: <{i}@mx.remote.test>\r\n\r\n\
         report {i}\r\n.a line with a leading dot\r\n"
    )
    .into_bytes()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test]
async fn accepted_mail_is_archived_and_a_deferred_one_comes_back_next_round() {
    let dovecot = Dovecot::start();
    let mails: Vec<Vec<u8>> = (1..=5).map(mail).collect();
    for m in &mails {
        dovecot.deliver("INBOX", m);
    }
    let recorder = Recorder::default();
    recorder.fail_on(Some(b"Subject: bounce 5"));
    let s = settings(&dovecot, Some("Archive"));
    let token = CancellationToken::new();

    let outcome = poll_once(&s, &recorder, &token).await;
    assert_eq!(
        outcome.expect("round"),
        RoundOutcome::Deferred { accepted: 4 },
        "{}",
        dovecot.log()
    );
    let got = recorder.mails();
    assert_eq!(
        recorder.data(),
        mails[..4].to_vec(),
        "in order, exact bytes"
    );
    assert!(got
        .iter()
        .all(|m| m.source == Source::Imap && m.mail_from.is_empty() && m.rcpt_to.is_empty()));
    assert_eq!(dovecot.contents("INBOX"), vec![mails[4].clone()]);
    assert_eq!(
        sorted(dovecot.contents("Archive")),
        sorted(mails[..4].to_vec())
    );

    recorder.fail_on(None);
    let outcome = poll_once(&s, &recorder, &token).await.expect("round");
    assert_eq!(
        outcome,
        RoundOutcome::Done {
            accepted: 1,
            oversize: 0
        }
    );
    assert_eq!(recorder.data(), mails, "the deferred one, once");
    assert!(dovecot.contents("INBOX").is_empty());
    assert_eq!(sorted(dovecot.contents("Archive")), sorted(mails.clone()));

    let outcome = poll_once(&s, &recorder, &token).await.expect("round");
    assert_eq!(
        outcome,
        RoundOutcome::Done {
            accepted: 0,
            oversize: 0
        }
    );
    assert_eq!(recorder.mails().len(), 5, "nothing taken twice");
}

#[tokio::test]
async fn without_an_archive_accepted_mail_is_deleted_and_a_failure_ends_the_round() {
    let dovecot = Dovecot::start();
    let mails: Vec<Vec<u8>> = (1..=5).map(mail).collect();
    for m in &mails {
        dovecot.deliver("INBOX", m);
    }
    let recorder = Recorder::default();
    recorder.fail_on(Some(b"Subject: bounce 3"));
    let s = settings(&dovecot, None);
    let token = CancellationToken::new();

    let outcome = poll_once(&s, &recorder, &token).await.expect("round");
    assert_eq!(outcome, RoundOutcome::Deferred { accepted: 2 });
    assert_eq!(recorder.data(), mails[..2].to_vec());
    assert_eq!(dovecot.contents("INBOX"), mails[2..].to_vec());

    recorder.fail_on(None);
    let outcome = poll_once(&s, &recorder, &token).await.expect("round");
    assert_eq!(
        outcome,
        RoundOutcome::Done {
            accepted: 3,
            oversize: 0
        }
    );
    assert_eq!(recorder.data(), mails);
    assert!(dovecot.contents("INBOX").is_empty(), "deleted and expunged");
    assert!(dovecot.contents("Archive").is_empty());
}

#[tokio::test]
async fn servers_without_move_or_uidplus_get_copy_deleted_and_expunge() {
    let dovecot = Dovecot::start_with(DovecotOptions {
        move_and_uidplus: false,
    });
    let mails: Vec<Vec<u8>> = (1..=3).map(mail).collect();
    for m in &mails {
        dovecot.deliver("INBOX", m);
    }
    let recorder = Recorder::default();
    let s = settings(&dovecot, Some("Processed"));
    let outcome = poll_once(&s, &recorder, &CancellationToken::new())
        .await
        .expect("round");
    assert_eq!(
        outcome,
        RoundOutcome::Done {
            accepted: 3,
            oversize: 0
        },
        "{}",
        dovecot.log()
    );
    assert_eq!(recorder.data(), mails);
    assert!(dovecot.contents("INBOX").is_empty());
    let archived = dovecot.messages("Processed");
    assert_eq!(
        sorted(archived.iter().map(|m| m.data.clone()).collect()),
        sorted(mails)
    );
    assert!(
        archived.iter().all(|m| !m.flags.contains('T')),
        "the copies are not flagged deleted: {archived:?}"
    );
}

#[tokio::test]
async fn oversize_mail_is_left_in_the_mailbox() {
    let dovecot = Dovecot::start();
    let small = mail(1);
    let mut big = mail(2);
    big.extend(std::iter::repeat_n(b'x', 3000));
    big.extend_from_slice(b"\r\n");
    dovecot.deliver("INBOX", &small);
    dovecot.deliver("INBOX", &big);
    let recorder = Recorder::default();
    let s = ImapPoll {
        max_message_bytes: 1000,
        ..settings(&dovecot, None)
    };
    let token = CancellationToken::new();
    for round in 0..2 {
        let outcome = poll_once(&s, &recorder, &token).await.expect("round");
        assert_eq!(
            outcome,
            RoundOutcome::Done {
                accepted: 1 - round,
                oversize: 1
            }
        );
        assert_eq!(recorder.data(), vec![small.clone()]);
        assert_eq!(dovecot.contents("INBOX"), vec![big.clone()]);
    }
}

#[tokio::test]
async fn a_wrong_password_is_retried_until_it_works_and_shutdown_stops_the_loop() {
    let dovecot = Dovecot::start();
    dovecot.deliver("INBOX", &mail(1));
    // The poller keeps "secret"; the server wants something else for now.
    dovecot.set_password("not-the-secret");
    let s = settings(&dovecot, None);
    let recorder = Arc::new(Recorder::default());
    let token = CancellationToken::new();

    let err = poll_once(&s, &*recorder, &token)
        .await
        .expect_err("login refused");
    assert!(matches!(err, ImapError::Login { .. }), "{err:?}");

    let task = tokio::spawn(poll(s.clone(), recorder.clone(), token.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished(), "the poller keeps going");
    assert!(recorder.mails().is_empty());

    dovecot.set_password("secret");
    wait_for(
        "the mail after the password fix",
        Duration::from_secs(20),
        || async { (recorder.mails().len() == 1).then_some(()) },
    )
    .await;
    assert_eq!(recorder.data(), vec![mail(1)]);

    // Polls go on: a new mail is taken at the next interval.
    dovecot.deliver("INBOX", &mail(2));
    wait_for("the second mail", Duration::from_secs(10), || async {
        (recorder.mails().len() == 2).then_some(())
    })
    .await;
    // The poller expunges a mail after handing it on: wait for that step too.
    wait_for(
        "the inbox to be expunged",
        Duration::from_secs(10),
        || async { dovecot.contents("INBOX").is_empty().then_some(()) },
    )
    .await;

    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the poller stops on shutdown")
        .expect("no panic");
}

#[tokio::test]
async fn starttls_is_required_when_asked_and_optional_when_opportunistic() {
    let dovecot = Dovecot::start();
    dovecot.deliver("INBOX", &mail(1));
    let recorder = Recorder::default();
    let token = CancellationToken::new();
    let mut s = settings(&dovecot, None);

    s.imap.tls = TlsMode::Starttls;
    let err = poll_once(&s, &recorder, &token)
        .await
        .expect_err("this Dovecot has no TLS");
    assert!(matches!(err, ImapError::StartTls(_)), "{err:?}");
    assert!(recorder.mails().is_empty());
    assert_eq!(dovecot.contents("INBOX").len(), 1);

    s.imap.tls = TlsMode::Opportunistic;
    let outcome = poll_once(&s, &recorder, &token).await.expect("round");
    assert_eq!(
        outcome,
        RoundOutcome::Done {
            accepted: 1,
            oversize: 0
        }
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let port = mailpipe_tests::free_port();
    let s = ImapPoll {
        imap: ImapSettings {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::Implicit,
            username: "u".into(),
            password: SecretString::from("p"),
            mailbox: "INBOX".into(),
            poll_interval: Duration::from_millis(100),
            archive_mailbox: None,
        },
        max_message_bytes: 1000,
        timeout: Duration::from_secs(2),
    };
    let err = poll_once(&s, &Recorder::default(), &CancellationToken::new())
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ImapError::Connect { .. }), "{err:?}");
}
