//! JetStream keeps a message once per id: the same event published twice
//! (a retry after a lost acknowledgement) is stored once.

use async_nats::jetstream::message::PublishMessage;
use parallelrun_agent::publish::{DEFAULT_STREAM, stream_config};

use super::Rig;

#[test]
fn the_same_message_id_published_twice_is_stored_once() {
    let rig = Rig::start();
    let url = rig.nats.url();
    let acks = parallelrun_tests::nats::with_jetstream(&rig.pair.server, &url, async |js| {
        js.get_or_create_stream(stream_config(DEFAULT_STREAM))
            .await
            .unwrap();
        let mut acks = Vec::new();
        for (id, body) in [
            ("n:1:e7", "first"),
            ("n:1:e7", "again"),
            ("n:1:e8", "other"),
        ] {
            let msg = PublishMessage::build().message_id(id).payload(body.into());
            let ack = js
                .send_publish("parallelrun.mismatch.svc.n", msg)
                .await
                .unwrap()
                .await
                .unwrap();
            acks.push(ack.duplicate);
        }
        acks
    });
    assert_eq!(acks, [false, true, false]);
    let c = parallelrun_tests::nats::contents(&rig.pair.server, &url, DEFAULT_STREAM);
    assert_eq!(c.ids, ["n:1:e7", "n:1:e8"]);
    assert_eq!(c.count("parallelrun.mismatch.svc.n"), 2);
}
