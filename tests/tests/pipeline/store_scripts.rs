//! Redis scripts tested directly against Redis (a random prefix each), as
//! tables of steps and expected answers.

use mailpipe_common::config::RedisSettings;
use mailpipe_common::store::Store;

async fn store() -> Store {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let settings = RedisSettings {
        prefix: format!("test-{}", &id[..12]),
        ..RedisSettings::default()
    };
    Store::connect(&settings).await.expect("Redis on localhost")
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Begin,
    End,
    Close,
    Reopen,
}

#[tokio::test]
async fn a_parking_queue_is_closed_only_when_no_sender_parks_and_senders_are_turned_away_while_closed(
) {
    use Step::*;
    let s = store().await;
    let r = "campaign-1";
    // (step, answer of begin/close; None for the steps without one)
    let table = [
        (Begin, Some(true)),
        (Begin, Some(true)),
        (Close, Some(false)), // two senders parking
        (End, None),
        (Close, Some(false)), // one still parking
        (End, None),
        (Close, Some(true)),  // nobody parks: closed for deletion
        (Begin, Some(false)), // a sender is turned away meanwhile
        (Close, Some(true)),
        (Reopen, None),
        (Begin, Some(true)), // open again
        (End, None),
    ];
    for (i, (step, expected)) in table.into_iter().enumerate() {
        let got = match step {
            Begin => Some(s.begin_parking(r).await.unwrap()),
            Close => Some(s.close_parking(r).await.unwrap()),
            End => {
                s.end_parking(r).await.unwrap();
                None
            }
            Reopen => {
                s.reopen_parking(r).await.unwrap();
                None
            }
        };
        assert_eq!(got, expected, "step {i} ({step:?})");
    }
    // Each end of a parking marks the campaign for the sweeper.
    assert_eq!(s.parked().await.unwrap(), vec![r.to_string()]);
    // A turned-away begin did not count as a parking in progress.
    assert!(s.close_parking(r).await.unwrap());
    let p = s.prefix();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{p}:parked"))
        .arg(format!("{p}:parking:{r}"))
        .arg(format!("{p}:parking_closed:{r}"))
        .query_async(&mut s.connection())
        .await
        .unwrap();
}
