//! Server and client of this crate talking to each other over an in-memory pipe:
//! handshake with and without JWT auth, simple queries, errors, CopyBoth carrying proposer
//! protocol messages, and hostile framing.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::BytesMut;
use pq_proto::client::ClientConnection;
use pq_proto::{Handshake, HandshakeConfig, ProtocolError, ServerConnection, StartupParams};
use safekeeper_api::membership::{Configuration, Generation};
use safekeeper_api::proto::ProposerGreeting;
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utils::auth::{Claims, JwtAuth, Scope, encode, generate_keypair};
use utils::{TenantId, TimelineId};

const SK_SCOPES: &[Scope] = &[Scope::SafekeeperData, Scope::Tenant];

fn params(tenant: TenantId, timeline: TimelineId) -> StartupParams {
    StartupParams::for_timeline(tenant, timeline, "walproposer")
}

#[tokio::test]
async fn queries_and_errors_without_auth() {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        common::serve(ServerConnection::from_stream(s), HandshakeConfig::default()).await
    });
    let mut client = ClientConnection::from_stream(c);
    let (tenant, timeline) = (TenantId::generate(), TimelineId::generate());
    let sp = client
        .startup(&params(tenant, timeline), None)
        .await
        .unwrap();
    assert_eq!(sp.get("integer_datetimes"), Some("on"));
    assert!(sp.backend_key.is_some());

    let r = client.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(r.columns, ["systemid", "timeline", "xlogpos", "dbname"]);
    assert_eq!(
        r.rows,
        vec![vec![
            Some("7000000000000001".to_string()),
            Some("1".into()),
            Some("0/1000028".into()),
            None
        ]]
    );
    assert_eq!(r.command_tag.as_deref(), Some("IDENTIFY_SYSTEM"));
    let r = client.simple_query("SET datestyle TO 'ISO'").await.unwrap();
    assert_eq!(r.command_tag.as_deref(), Some("SET"));

    // A bad command is an ERROR; the session goes on.
    let e = client.simple_query("START_WAL_PUSH").await.unwrap_err();
    let ProtocolError::Server(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.code, "42601");
    assert!(e.message.contains("protocol version 2"), "{}", e.message);
    let r = client.simple_query("SHOW wal_segment_size").await.unwrap();
    assert_eq!(r.rows, vec![vec![Some("16MB".to_string())]]);

    client.writer().write_terminate();
    client.writer().flush().await.unwrap();
    let (seen, result) = server.await.unwrap();
    result.unwrap();
    let Some(Handshake::Ready { params, claims }) = seen.handshake else {
        panic!()
    };
    assert_eq!(claims, None);
    assert_eq!(
        params.setting("tenant_id").unwrap(),
        Some(tenant.to_string())
    );
    assert_eq!(
        params.setting("timeline_id").unwrap(),
        Some(timeline.to_string())
    );
    assert_eq!(seen.queries.len(), 4);
}

#[tokio::test]
async fn copy_both_carries_proposer_messages() {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        common::serve(ServerConnection::from_stream(s), HandshakeConfig::default()).await
    });
    let mut client = ClientConnection::from_stream(c);
    let (tenant, timeline) = (TenantId::generate(), TimelineId::generate());
    client
        .startup(&params(tenant, timeline), None)
        .await
        .unwrap();
    client
        .start_copy_both("START_WAL_PUSH (proto_version '3', allow_timeline_creation 'true')")
        .await
        .unwrap();
    let (mut reader, mut writer) = client.into_split();
    let greeting = ProposerMessage::Greeting(ProposerGreeting {
        tenant_id: tenant,
        timeline_id: timeline,
        mconf: Configuration::new(Generation(3), vec![]),
        pg_version: 150007,
        system_id: 1,
        wal_seg_size: 16 << 20,
    });
    writer
        .write_copy_data_with(|b: &mut BytesMut| greeting.encode(b))
        .unwrap();
    writer.flush().await.unwrap();
    let reply = reader.read_copy_data(1024).await.unwrap().unwrap();
    let AcceptorMessage::Greeting(g) = AcceptorMessage::decode(&reply).unwrap() else {
        panic!()
    };
    assert_eq!((g.term, g.mconf.generation), (42, Generation(3)));
    writer.write_copy_done();
    writer.flush().await.unwrap();
    let (seen, result) = server.await.unwrap();
    result.unwrap();
    assert_eq!(seen.proposer_messages, vec![greeting]);
}

#[tokio::test]
async fn malformed_proposer_message_gets_an_error_reply() {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        common::serve(ServerConnection::from_stream(s), HandshakeConfig::default()).await
    });
    let mut client = ClientConnection::from_stream(c);
    client
        .startup(&params(TenantId::generate(), TimelineId::generate()), None)
        .await
        .unwrap();
    client
        .start_copy_both("START_WAL_PUSH (proto_version '3')")
        .await
        .unwrap();
    client.writer().write_copy_data(b"v\0\0");
    client.writer().flush().await.unwrap();
    let e = client.reader().read_copy_data(1024).await.unwrap_err();
    let ProtocolError::Server(e) = e else {
        panic!("{e}")
    };
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "08P01"));
    assert!(
        e.message
            .starts_with("VoteRequest: truncated reading generation"),
        "{}",
        e.message
    );
    let (_, result) = server.await.unwrap();
    assert!(result.is_err());
}

async fn auth_attempt(
    auth: &JwtAuth,
    tenant_in_options: Option<TenantId>,
    password: Option<String>,
) -> (
    Result<(), ProtocolError>,
    Result<Option<Claims>, ProtocolError>,
) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let client = async move {
        let mut client = ClientConnection::from_stream(c);
        let mut p = StartupParams::new().with("user", "strata");
        if let Some(t) = tenant_in_options {
            p = p.with_settings(&[("tenant_id", &t.to_string())]);
        }
        client.startup(&p, password.as_deref()).await.map(|_| ())
    };
    let server = async {
        let mut conn = ServerConnection::from_stream(s);
        let config = HandshakeConfig {
            auth: Some(auth),
            allowed_scopes: SK_SCOPES,
            ..HandshakeConfig::default()
        };
        match conn.handshake(&config).await {
            Ok(Handshake::Ready { claims, .. }) => Ok(claims),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    tokio::join!(client, server)
}

#[tokio::test]
async fn jwt_auth_scopes() {
    let keys = generate_keypair().unwrap();
    let auth = JwtAuth::from_pems(&[keys.public_pem.as_bytes()]).unwrap();
    let token = |c: &Claims| encode(keys.private_pem.as_bytes(), c).unwrap();
    let mine = TenantId::generate();

    // safekeeperdata: everything, with or without a tenant.
    let sk = token(&Claims::new(Scope::SafekeeperData));
    let (c, s) = auth_attempt(&auth, Some(mine), Some(sk.clone())).await;
    c.unwrap();
    assert_eq!(s.unwrap().unwrap().scope, Scope::SafekeeperData);
    let (c, s) = auth_attempt(&auth, None, Some(sk)).await;
    c.unwrap();
    s.unwrap();

    // tenant: only its own tenant.
    let t = token(&Claims::tenant(mine));
    let (c, s) = auth_attempt(&auth, Some(mine), Some(t.clone())).await;
    c.unwrap();
    assert_eq!(s.unwrap().unwrap().tenant_id, Some(mine));
    let (c, s) = auth_attempt(&auth, Some(TenantId::generate()), Some(t.clone())).await;
    let ProtocolError::Server(e) = c.unwrap_err() else {
        panic!()
    };
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "28000"));
    assert!(
        e.message.contains(&format!("token is for tenant {mine}")),
        "{}",
        e.message
    );
    assert!(matches!(s.unwrap_err(), ProtocolError::Auth(_)));
    let (c, _) = auth_attempt(&auth, None, Some(t)).await;
    assert!(
        c.unwrap_err()
            .to_string()
            .contains("not for a cluster-wide operation")
    );

    // Other scopes, bad tokens, no token.
    let (c, _) = auth_attempt(&auth, None, Some(token(&Claims::new(Scope::PageServerApi)))).await;
    assert!(
        c.unwrap_err()
            .to_string()
            .contains("scope pageserverapi is not allowed here")
    );
    let (c, s) = auth_attempt(&auth, None, Some("not-a-jwt".into())).await;
    assert!(c.unwrap_err().to_string().contains("invalid token"));
    assert!(s.is_err());
    let other = generate_keypair().unwrap();
    let forged = encode(
        other.private_pem.as_bytes(),
        &Claims::new(Scope::SafekeeperData),
    )
    .unwrap();
    let (c, _) = auth_attempt(&auth, None, Some(forged)).await;
    assert!(c.unwrap_err().to_string().contains("invalid token"));
    let (c, s) = auth_attempt(&auth, None, None).await;
    assert!(c.unwrap_err().to_string().contains("none was given"));
    assert!(s.is_err(), "server sees the client go away");
}

#[tokio::test]
async fn ssl_request_is_declined_then_startup_continues() {
    let (mut c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let mut conn = ServerConnection::from_stream(s);
        conn.handshake(&HandshakeConfig::default()).await
    });
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut buf);
    c.write_all(&buf).await.unwrap();
    let mut answer = [0u8; 1];
    c.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    let mut client = ClientConnection::from_stream(c);
    client
        .startup(&StartupParams::new().with("user", "u"), None)
        .await
        .unwrap();
    assert!(matches!(
        server.await.unwrap().unwrap(),
        Handshake::Ready { .. }
    ));
}

#[tokio::test]
async fn cancel_request_and_silent_close() {
    let (mut c, s) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move {
        ServerConnection::from_stream(s)
            .handshake(&HandshakeConfig::default())
            .await
    });
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(11, 22, &mut buf);
    c.write_all(&buf).await.unwrap();
    assert_eq!(
        server.await.unwrap().unwrap(),
        Handshake::Cancel {
            process_id: 11,
            secret_key: 22
        }
    );

    let (c, s) = tokio::io::duplex(1024);
    drop(c);
    let hs = ServerConnection::from_stream(s)
        .handshake(&HandshakeConfig::default())
        .await;
    assert_eq!(hs.unwrap(), Handshake::Closed);
}

#[tokio::test]
async fn hostile_framing() {
    // A startup packet claiming 1 GiB is refused from its length word.
    let (mut c, s) = tokio::io::duplex(1024);
    c.write_all(&(1i32 << 30).to_be_bytes()).await.unwrap();
    let e = ServerConnection::from_stream(s)
        .handshake(&HandshakeConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
    // The client was told why.
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply[0], b'E');
    assert!(String::from_utf8_lossy(&reply).contains("exceeds the limit"));

    // A message longer than the reader's limit.
    let (c, s) = tokio::io::duplex(64 * 1024);
    let mut server = ServerConnection::from_stream(s);
    let mut client = ClientConnection::from_stream(c);
    let (config, params) = (
        HandshakeConfig::default(),
        StartupParams::new().with("user", "u"),
    );
    let (hs, cl) = tokio::join!(server.handshake(&config), client.startup(&params, None));
    hs.unwrap();
    cl.unwrap();
    client.writer().write_copy_data(&[0u8; 2000]);
    client.writer().flush().await.unwrap();
    let e = server.read_message(1000).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "message 'd' of 2000 bytes exceeds the limit of 1000 bytes"
    );

    // A negative length, and a connection cut inside a message.
    let (mut c, s) = tokio::io::duplex(1024);
    let mut reader = pq_proto::framed::MessageReader::new(s);
    c.write_all(b"Q\xff\xff\xff\xff").await.unwrap();
    let e = reader.read_fe_message(100).await.unwrap_err();
    assert!(e.to_string().contains("invalid length -1"), "{e}");
    let (mut c, s) = tokio::io::duplex(1024);
    let mut reader = pq_proto::framed::MessageReader::new(s);
    c.write_all(b"Q\0\0\0\x10abc").await.unwrap();
    drop(c);
    let e = reader.read_fe_message(100).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "connection closed in the middle of message body"
    );
    // Bad startup options are reported.
    let (c, s) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        ServerConnection::from_stream(s)
            .handshake(&HandshakeConfig::default())
            .await
    });
    let mut client = ClientConnection::from_stream(c);
    let e = client
        .startup(&StartupParams::new().with("options", "-c tenant_id"), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("setting \"tenant_id\" has no value"),
        "{e}"
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn client_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (r, w) = sock.into_split();
        common::serve(ServerConnection::new(r, w), HandshakeConfig::default()).await
    });
    let mut client = ClientConnection::connect_tcp(&addr).await.unwrap();
    let (tenant, timeline) = (TenantId::generate(), TimelineId::generate());
    client
        .startup(&params(tenant, timeline), None)
        .await
        .unwrap();
    let r = client.simple_query("identify_system").await.unwrap();
    assert_eq!(r.rows.len(), 1);
    drop(client);
    let (seen, result) = server.await.unwrap();
    result.unwrap();
    assert_eq!(seen.queries, ["identify_system"]);
}
