//! AMQP 1.0 messages to envelopes and back, with the JMS conventions of Qpid JMS.
//!
//! Sections map as follows. `header` and `properties` fill the envelope's properties (the
//! JMS headers live there: JMSDeliveryMode is `durable`, JMSPriority `priority`, JMSType
//! `subject`, JMSTimestamp `creation-time`). `application-properties` become headers under
//! their own names; `message-annotations` become headers under their `x-` names, so that a
//! header named `x-…` goes back into the annotations. Application properties may only hold
//! simple values: a list, a map or a decimal is written as its text and its type recorded in
//! the `x-opt-portico-types` annotation, which restores it on the way back.
//!
//! The body keeps its kind: `data` sections are bytes, an `amqp-value` string is text, an
//! `amqp-value` map or list (JMS Map and Stream messages) travels as JSON with its shape.
//! Delivery annotations are hop-by-hop and stop here.
//!
//! `message_decoder` reads a received message, `message_encoder` writes one; `jms_names`
//! makes property names JMS-legal and `value_conversion` holds the small value conversions.

mod jms_names;
mod message_decoder;
mod message_encoder;
mod value_conversion;

use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value as AmqpValueT;

pub use message_decoder::decode;
pub use message_encoder::encode;

/// The annotation holding the types of application properties written as text.
pub const TYPES_ANNOTATION: &str = "x-opt-portico-types";
/// The annotation mapping JMS-legal property names back to the names they stand for.
pub const NAMES_ANNOTATION: &str = "x-opt-portico-names";
/// Says that the subject holds the 0-9-1 `type` (JMSType), so that it returns there.
pub const SUBJECT_ANNOTATION: &str = "x-opt-portico-subject";
/// Qpid JMS message type annotation (AMQP byte).
pub const JMS_MSG_TYPE: &str = "x-opt-jms-msg-type";
/// Qpid JMS destination type annotation (AMQP byte: 0 queue, 1 topic).
pub const JMS_DEST: &str = "x-opt-jms-dest";

/// Qpid JMS reply-to type annotation (AMQP byte: 0 queue, 1 topic).
pub const JMS_REPLY_TO: &str = "x-opt-jms-reply-to";

/// JMS message types, as `x-opt-jms-msg-type` numbers them.
const JMS_MAP: i8 = 2;
const JMS_BYTES: i8 = 3;
const JMS_STREAM: i8 = 4;
const JMS_TEXT: i8 = 5;

/// The message type fe2o3 decodes into: any body.
pub type AmqpMessage = Message<Body<AmqpValueT>>;

/// How the peer reads messages: plain AMQP 1.0, or a JMS broker that needs the Qpid JMS
/// annotations and JMS-legal property values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub jms: bool,
    /// `Some(true)` for a topic, `Some(false)` for a queue, when the route says.
    pub topic: Option<bool>,
}

impl Target {
    /// How a broker of `flavor` reads messages sent to a `node`.
    pub fn of(flavor: crate::config::model::Flavor, node: crate::pipeline::Node) -> Target {
        Target {
            jms: flavor.jms(),
            topic: match node {
                crate::pipeline::Node::Queue => Some(false),
                crate::pipeline::Node::Topic => Some(true),
                crate::pipeline::Node::Address => None,
            },
        }
    }
}

/// Round trips through both sides: what [`encode`] writes, [`decode`] reads back.
#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fe2o3_amqp::types::messaging::Data;
    use fe2o3_amqp::types::primitives::{Binary, SimpleValue};

    use super::jms_names::is_java_identifier;
    use super::*;
    use crate::pipeline::{Envelope, Ledger, Value};

    fn jms() -> Target {
        Target { jms: true, topic: Some(false) }
    }

    #[test]
    fn binary_properties_survive_a_jms_hop_as_text() {
        // R2A-10, K2A-04
        let mut env = Envelope::default();
        env.headers.push(("sig".into(), Value::Bytes(Bytes::from_static(&[0x01, 0xFF, 0x00]))));
        env.headers.push(("k".into(), Value::String("v".into())));
        let message = encode(&env, jms(), "queue://q", &mut Ledger::all());
        let props = message.application_properties.as_ref().expect("app props");
        assert_eq!(props.0.get("sig"), Some(&SimpleValue::String("Af8A".into())));
        let back = decode(message, "queue://q");
        assert_eq!(
            back.header("sig"),
            Some(&Value::Bytes(Bytes::from_static(&[0x01, 0xFF, 0x00])))
        );
        assert_eq!(back.header("k"), Some(&Value::String("v".into())));
    }

    #[test]
    fn names_that_are_not_jms_identifiers_are_escaped_and_restored() {
        // R2A-12
        let mut env = Envelope::default();
        env.headers.push(("customer-id".into(), Value::String("c-1".into())));
        env.headers.push(("customer_id".into(), Value::String("other".into())));
        env.headers.push(("9lives".into(), Value::I32(9)));
        let message = encode(&env, jms(), "queue://q", &mut Ledger::all());
        let props = message.application_properties.as_ref().expect("app props");
        let names: Vec<&String> = props.0.keys().collect();
        assert_eq!(names, ["customer_id_1", "customer_id", "_9lives"]);
        assert!(names.iter().all(|n| is_java_identifier(n)));
        let back = decode(message, "queue://q");
        let app: Vec<_> = back.headers.into_iter().filter(|(n, _)| !n.starts_with("x-")).collect();
        assert_eq!(app, env.headers);
    }

    #[test]
    fn a_data_body_keeps_its_buffer_and_sections_are_joined() {
        let one = Envelope { body: Bytes::from(vec![7u8; 1024]), ..Envelope::default() };
        let message = encode(&one, Target { jms: false, topic: None }, "a", &mut Ledger::all());
        let Body::Data(sections) = &message.body else { panic!("expected a data body") };
        let at = sections.iter().next().map(|d| d.0.as_slice().as_ptr());
        let decoded = decode(message, "a");
        assert_eq!(Some(decoded.body.as_ptr()), at, "one section moves without a copy");
        assert_eq!(decoded.body.len(), 1024);

        let mut two = encode(
            &Envelope::default(),
            Target { jms: false, topic: None },
            "a",
            &mut Ledger::all(),
        );
        let parts = [Data(Binary::from(b"ab".to_vec())), Data(Binary::from(b"cd".to_vec()))];
        two.body = Body::Data(parts.into_iter().collect::<Vec<_>>().into());
        assert_eq!(&decode(two, "a").body[..], b"abcd");
    }

    #[test]
    fn a_repeated_name_travels_as_one_value_and_comes_back_apart() {
        // K2A-06
        let env = Envelope {
            headers: vec![
                ("tag".into(), Value::String("a".into())),
                ("x-seen".into(), Value::I64(1)),
                ("tag".into(), Value::I32(1)),
                ("tag-id".into(), Value::Bytes(Bytes::from_static(&[0xFF]))),
                ("x-seen".into(), Value::String("b".into())),
                ("tag-id".into(), Value::U64(u64::MAX)),
            ],
            ..Envelope::default()
        };
        for target in [jms(), Target { jms: false, topic: None }] {
            let mut ledger = Ledger::all();
            let message = encode(&env, target, "q", &mut ledger);
            assert_eq!(ledger.lossy_notes().count(), 0, "{:?}", ledger.notes());
            let back = decode(message, "q");
            // The JMS annotations describe this hop, not the message.
            let mut got: Vec<_> =
                back.headers.into_iter().filter(|(n, _)| !n.starts_with("x-opt-jms-")).collect();
            let mut want = env.headers.clone();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want, "jms: {}", target.jms);
        }
    }

    #[test]
    fn a_content_type_a_symbol_cannot_hold_travels_as_a_property() {
        // R2A-07
        let mut env = Envelope::default();
        env.properties.content_type = Some("text/plain; name=ключ".into());
        env.properties.content_encoding = Some("¡".into());
        for target in [jms(), Target { jms: false, topic: None }] {
            let mut ledger = Ledger::lossy();
            let back = decode(encode(&env, target, "q", &mut ledger), "q");
            assert_eq!(ledger.notes(), &[]);
            assert_eq!(back.properties.content_type, env.properties.content_type);
            assert_eq!(back.properties.content_encoding, env.properties.content_encoding);
            assert!(
                back.headers.iter().all(|(n, _)| n.starts_with("x-opt-")),
                "{:?}",
                back.headers
            );
        }
    }

    #[test]
    fn a_091_type_sent_as_jms_subject_comes_back_as_the_type() {
        // R2A-09
        let mut env = Envelope::default();
        env.properties.message_type = Some("order.created".into());
        let message = encode(&env, jms(), "q", &mut Ledger::lossy());
        let subject = message.properties.as_ref().and_then(|p| p.subject.clone());
        assert_eq!(subject.as_deref(), Some("order.created"));
        let back = decode(message, "q");
        assert_eq!(back.properties.message_type.as_deref(), Some("order.created"));
        assert_eq!(back.properties.subject, None);
    }

    #[test]
    fn unsigned_jms_properties_and_annotation_decimals_keep_their_type() {
        // R2A-10, R2A-11
        let env = Envelope {
            // Annotations come first on the way back.
            headers: vec![
                ("x-price".into(), Value::Decimal { scale: 2, value: 1990 }),
                ("small".into(), Value::U8(200)),
                ("port".into(), Value::U16(65535)),
                ("count".into(), Value::U32(u32::MAX)),
            ],
            ..Envelope::default()
        };
        let back = decode(encode(&env, jms(), "q", &mut Ledger::lossy()), "q");
        let got: Vec<_> =
            back.headers.into_iter().filter(|(n, _)| !n.starts_with("x-opt-")).collect();
        assert_eq!(got, env.headers);
    }
}
