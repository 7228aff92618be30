//! `portico explain`: the exact lines a migration team reads, for a sample of each source
//! protocol, a message that would be dead-lettered, and a sample that is wrong.

use std::path::PathBuf;
use std::process::Command;

fn explain(bridge: &str, sample: &str, format: &str) -> (i32, String, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/explain");
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .current_dir(&dir)
        .args(["explain", "--bridge", bridge, "--message", sample, "--format", format])
        .args(["--config", "bridges.yaml"])
        .env_remove("PORTICO_CONFIG")
        .output()
        .expect("runs portico");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn an_amqp_0_9_1_sample_to_kafka() {
    let (code, stdout, stderr) = explain("orders-to-kafka", "amqp091.yaml", "text");
    assert_eq!(code, 0, "{stderr}");
    let expected = [
        "Bridge   orders-to-kafka: amqp091 queue \"orders\" → kafka",
        "Message  amqp091.yaml",
        "Outcome  delivered to kafka topic \"orders.created\", key \"c-42\", partition chosen by the key's hash",
        "",
        "As read from the source",
        "  FIELD                     TYPE            VALUE",
        "  origin.exchange           string          \"orders\"",
        "  origin.routing_key        string          \"created\"",
        "  origin.queue              string          \"orders\"",
        "  properties.message_id     string          \"m-1\"",
        "  properties.content_type   string          \"application/json\"",
        "  properties.durable        bool            true",
        "  properties.creation_time  timestamp (ms)  1700000000000",
        "  headers.attempt           i32             3",
        "  headers.big               u32             4000000000",
        "  headers.customerId        string          \"c-42\"",
        "  headers.debug             string          \"yes\"",
        "  body                      bytes           13 bytes: \"{\\\"sku\\\":\\\"A-1\\\"}\"",
        "",
        "As the sink sends it (kafka)",
        "  FIELD                          TYPE             VALUE",
        "  topic                          string           \"orders.created\"",
        "  partition                      -                chosen by the key's hash (murmur2)",
        "  key                            bytes            \"c-42\"",
        "  timestamp                      CreateTime (ms)  1700000000000",
        "  headers.content-type           bytes            \"application/json\"",
        "  headers.amqp.message-id        bytes            \"m-1\"",
        "  headers.amqp.durable           bytes            \"true\"",
        "  headers.amqp.creation-time-ms  bytes            \"1700000000000\"",
        "  headers.amqp.exchange          bytes            \"orders\"",
        "  headers.amqp.routing-key       bytes            \"created\"",
        "  headers.attempt                bytes            \"3\"",
        "  headers.big                    bytes            \"4000000000\"",
        "  headers.customer-id            bytes            \"c-42\"",
        "  headers.portico.types          bytes            \"{\\\"attempt\\\":\\\"i32\\\",\\\"big\\\":\\\"u32\\\"}\"",
        "  value                          bytes            13 bytes: \"{\\\"sku\\\":\\\"A-1\\\"}\"",
        "",
        "Changes",
        "  FIELD                     CHANGE     FROM → TO                                 WHY",
        "  headers.customer-id       renamed    headers.customerId → headers.customer-id  rule rename: { headers: { customerId: customer-id } }",
        "  headers.debug             dropped    \"yes\" → nothing                           rule drop: { headers: [debug] }",
        "  properties.message_id     converted  property → amqp.* header                  Kafka records have no properties",
        "  properties.content_type   converted  property → amqp.* header                  Kafka records have no properties",
        "  properties.durable        converted  property → amqp.* header                  Kafka records have no properties",
        "  properties.creation_time  converted  timestamp (ms) → record timestamp + amqp.creation-time-ms  Kafka records have no properties",
        "  headers.attempt           converted  i32 → text + portico.types                Kafka header values are bytes; the type is recorded beside them",
        "  headers.big               converted  u32 → text + portico.types                Kafka header values are bytes; the type is recorded beside them",
    ];
    assert_eq!(lines(&stdout), expected);
}

#[test]
fn a_kafka_sample_to_jms() {
    let (code, stdout, stderr) = explain("events-to-jms", "kafka.yaml", "text");
    assert_eq!(code, 0, "{stderr}");
    let expected = [
        "Bridge   events-to-jms: kafka topics events (group \"portico-events\") → amqp10",
        "Message  kafka.yaml",
        "Outcome  delivered to amqp10 queue \"events.eu\"",
        "",
        "As read from the source",
        "  FIELD                     TYPE            VALUE",
        "  origin.topic              string          \"events\"",
        "  origin.partition          i32             0",
        "  origin.offset             i64             42",
        "  origin.key                bytes           \"order-42\"",
        "  properties.durable        bool            true",
        "  properties.creation_time  timestamp (ms)  1700000000123",
        "  headers.order-id          string          \"o-7\"",
        "  headers.raw               bytes           hex 00ff",
        "  headers.region            string          \"eu\"",
        "  body                      bytes           4 bytes: hex 636166e9",
        "",
        "As the sink sends it (amqp10)",
        "  FIELD                              TYPE               VALUE",
        "  address                            string             \"queue://events.eu\"",
        "  header.durable                     boolean            true",
        "  header.priority                    ubyte              4",
        "  properties.to                      string             \"queue://events.eu\"",
        "  properties.correlation_id          string             \"o-7\"",
        "  properties.creation_time           timestamp (ms)     1700000000123",
        "  annotations.x-opt-kafka-topic      string             \"events\"",
        "  annotations.x-opt-kafka-partition  int                0",
        "  annotations.x-opt-kafka-offset     long               42",
        "  annotations.x-opt-kafka-key        string             \"order-42\"",
        "  annotations.x-opt-portico-types    string             \"{\\\"raw\\\":\\\"base64\\\"}\"",
        "  annotations.x-opt-jms-msg-type     byte               5",
        "  annotations.x-opt-jms-dest         byte               0",
        "  application_properties.raw         string             \"AP8=\"",
        "  application_properties.region      string             \"eu\"",
        "  body                               amqp-value string  \"café\"",
        "",
        "Changes",
        "  FIELD                      CHANGE     FROM → TO                                 WHY",
        "  properties.correlation_id  moved      headers.order-id → properties.correlation_id  rule move: { header.order-id: correlation_id }",
        "  body                       converted  bytes (iso-8859-1) → text                 rule body: { to: text, charset: iso-8859-1 }",
        "  headers.raw                converted  bytes → string + x-opt-portico-types      application properties hold simple values only",
    ];
    assert_eq!(lines(&stdout), expected);
}

#[test]
fn an_amqp_1_0_sample_to_rabbitmq() {
    let (code, stdout, stderr) = explain("prices-to-rabbit", "amqp10.yaml", "text");
    assert_eq!(code, 0, "{stderr}");
    let expected = [
        "Bridge   prices-to-rabbit: amqp10 address \"queue://prices\" → amqp091",
        "Message  amqp10.yaml",
        "Outcome  delivered to amqp091 exchange \"prices\", routing key \"price.updated\"",
        "",
        "As read from the source",
        "  FIELD                       TYPE                                VALUE",
        "  origin.address              string                              \"queue://prices\"",
        "  properties.message_id       ulong                               12345",
        "  properties.priority         u8                                  7",
        "  properties.durable          bool                                true",
        "  properties.creation_time    timestamp (ms)                      1700000000123",
        "  properties.subject          string                              \"price.updated\"",
        "  headers.x-opt-jms-msg-type  i8                                  2",
        "  headers.currency            string                              \"EUR\"",
        "  headers.tick                i32                                 21",
        "  body                        map {\"sku\":\"string\",\"price\":\"f64\"}  25 bytes: \"{\\\"sku\\\":\\\"A-1\\\",\\\"price\\\":9.5}\"",
        "",
        "As the sink sends it (amqp091)",
        "  FIELD                          TYPE           VALUE",
        "  exchange                       shortstr       \"prices\"",
        "  routing_key                    shortstr       \"price.updated\"",
        "  properties.content_type        shortstr       \"application/json\"",
        "  properties.message_id          shortstr       \"ID:AMQP_ULONG:12345\"",
        "  properties.delivery_mode       octet          2",
        "  properties.priority            octet          7",
        "  properties.timestamp           timestamp (s)  1700000000",
        "  headers.amqp.creation-time-ms  l int64        1700000000123",
        "  headers.amqp.subject           S longstr      \"price.updated\"",
        "  headers.currency               S longstr      \"EUR\"",
        "  headers.tick                   I int32        21",
        "  headers.x-opt-jms-msg-type     b int8         2",
        "  body                           bytes          25 bytes: \"{\\\"sku\\\":\\\"A-1\\\",\\\"price\\\":9.5}\"",
        "",
        "Changes",
        "  FIELD                     CHANGE     FROM → TO                                 WHY",
        "  body                      converted  map → bytes (JSON, without the types)     rule body: { to: json }",
        "  properties.content_type   set        unset → \"application/json\"                rule body: { to: json }",
        "  properties.message_id     converted  ulong id → ID:AMQP_… text                 0-9-1 ids are strings; the prefix restores the type",
        "  properties.creation_time  converted  timestamp (ms) → T (s) + amqp.creation-time-ms  0-9-1 timestamps are whole seconds",
        "  properties.subject        converted  property → amqp.subject                   0-9-1 has no such property",
    ];
    assert_eq!(lines(&stdout), expected);
}

#[test]
fn a_message_that_would_be_dead_lettered_says_where_and_why() {
    let (code, stdout, stderr) = explain("orders-to-kafka", "amqp091-unroutable.yaml", "text");
    assert_eq!(code, 0, "{stderr}");
    let expected = [
        "Bridge   orders-to-kafka: amqp091 queue \"orders\" → kafka",
        "Message  amqp091-unroutable.yaml",
        "Outcome  DEAD-LETTERED at translate: invalid topic",
        "         error: invalid Kafka topic \"orders.created/eu\": use 1-249 of [a-zA-Z0-9._-]",
        "         goes to dead_letter kafka topic \"orders.dlq\", no key, partition chosen by the key's hash",
        "",
        "As read from the source",
        "  FIELD               TYPE    VALUE",
        "  origin.exchange     string  \"\"",
        "  origin.routing_key  string  \"created/eu\"",
        "  origin.queue        string  \"orders\"",
        "  headers.customerId  string  \"c-42\"",
        "  body                bytes   2 bytes: \"{}\"",
        "",
        "Changes",
        "  FIELD                CHANGE   FROM → TO                                 WHY",
        "  headers.customer-id  renamed  headers.customerId → headers.customer-id  rule rename: { headers: { customerId: customer-id } }",
    ];
    assert_eq!(lines(&stdout), expected);
}

#[test]
fn json_gives_tools_the_same_fields() {
    let (code, stdout, stderr) = explain("events-to-jms", "kafka.yaml", "json");
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["outcome"]["result"], "delivered");
    assert_eq!(json["outcome"]["destination"], "amqp10 queue \"events.eu\"");
    let body = json["sent"].as_array().and_then(|rows| rows.iter().find(|r| r["field"] == "body"));
    assert_eq!(body.map(|b| b["type"].clone()), Some("amqp-value string".into()));
    let change = &json["changes"][1];
    assert_eq!(
        (&change["field"], &change["change"], &change["from"], &change["to"]),
        (&"body".into(), &"converted".into(), &"bytes (iso-8859-1)".into(), &"text".into())
    );
}

#[test]
fn a_wrong_sample_is_refused_with_its_position() {
    let (code, stdout, stderr) = explain("orders-to-kafka", "bad-type.yaml", "text");
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(
        stderr.trim_end(),
        "bad-type.yaml:2:34: headers.attempt.value: not a valid int32: 3000000000 is out of range"
    );
    let (code, _, stderr) = explain("events-to-jms", "amqp091.yaml", "text");
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "amqp091.yaml:2:11: exchange: `exchange` does not apply to messages from a kafka source"
    );
    let (code, _, stderr) = explain("nope", "amqp091.yaml", "text");
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "bridges.yaml: no bridge named \"nope\"; bridges: orders-to-kafka, events-to-jms, \
         prices-to-rabbit"
    );
}
