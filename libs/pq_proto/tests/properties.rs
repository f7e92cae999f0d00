//! Property tests: replication sub-messages round-trip, option escaping round-trips, and
//! no parser panics on arbitrary input.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use pq_proto::replication::*;
use pq_proto::startup::{escape_option_word, parse_options, split_options};
use pq_proto::{FeMessage, FeStartupPacket};
use proptest::prelude::*;
use utils::Lsn;

fn arb_server_message() -> impl Strategy<Value = ReplicationMessage> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(s, e, t, d)| ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(s),
                wal_end: Lsn(e),
                send_time: t,
                data: Bytes::from(d),
            })),
        (any::<u64>(), any::<i64>(), any::<bool>()).prop_map(|(e, t, r)| {
            ReplicationMessage::Keepalive(PrimaryKeepalive {
                wal_end: Lsn(e),
                send_time: t,
                reply_requested: r,
            })
        }),
    ]
}

fn arb_client_message() -> impl Strategy<Value = ReplicationFeedback> {
    prop_oneof![
        (any::<[u64; 3]>(), any::<i64>(), any::<bool>()).prop_map(|(l, t, r)| {
            ReplicationFeedback::StandbyStatus(StandbyStatusUpdate {
                write_lsn: Lsn(l[0]),
                flush_lsn: Lsn(l[1]),
                apply_lsn: Lsn(l[2]),
                reply_time: t,
                reply_requested: r,
            })
        }),
        (any::<i64>(), any::<[u32; 4]>()).prop_map(|(t, x)| {
            ReplicationFeedback::HotStandby(HotStandbyFeedback {
                reply_time: t,
                xmin: x[0],
                xmin_epoch: x[1],
                catalog_xmin: x[2],
                catalog_xmin_epoch: x[3],
            })
        }),
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|block| ReplicationFeedback::Pageserver(Bytes::from(block))),
    ]
}

proptest! {
    #[test]
    fn server_messages_round_trip(m in arb_server_message()) {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        prop_assert_eq!(ReplicationMessage::decode(&b.freeze()).unwrap(), m);
    }

    #[test]
    fn client_messages_round_trip(m in arb_client_message()) {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        prop_assert_eq!(ReplicationFeedback::decode(&b).unwrap(), m);
    }

    #[test]
    fn option_words_round_trip(words in prop::collection::vec("[a-z_]{1,8}=[ -~\\t]{0,12}", 0..5)) {
        let joined = words.iter().map(|w| escape_option_word(w)).collect::<Vec<_>>().join(" -c ");
        let options = if words.is_empty() { String::new() } else { format!("-c {joined}") };
        prop_assert_eq!(split_options(&options).into_iter().filter(|w| w != "-c").collect::<Vec<_>>(), words.clone());
        let parsed = parse_options(&options).unwrap();
        let want: Vec<(String, String)> = words
            .iter()
            .map(|w| {
                let (n, v) = w.split_once('=').unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        prop_assert_eq!(parsed, want);
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120), tag in any::<u8>()) {
        let _ = ReplicationMessage::decode(&Bytes::from(bytes.clone()));
        let _ = ReplicationFeedback::decode(&bytes);
        let _ = FeStartupPacket::parse(&bytes);
        let _ = FeMessage::parse(tag, Bytes::from(bytes.clone()));
        let _ = parse_options(&String::from_utf8_lossy(&bytes));
    }
}
