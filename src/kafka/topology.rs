//! Creating the topics listed under a Kafka connection's `declare:`.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConnection;
use crate::config::file::DeclareFile;

/// Creates every declared topic that does not exist yet.
pub async fn declare(connection: &KafkaConnection, declare: &DeclareFile) -> Result<(), String> {
    if declare.topics.is_empty() {
        return Ok(());
    }
    let logging = super::Logging::new(format!("{} admin", connection.name));
    let config = super::client_config(connection, &[]);
    let admin: AdminClient<super::Logging> = super::create(connection, &config, logging, "admin")?;
    let topics: Vec<NewTopic<'_>> = declare
        .topics
        .iter()
        .map(|t| NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    let results = admin.create_topics(&topics, &options).await.map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("topic {topic:?}: {code}")),
        }
    }
    Ok(())
}
