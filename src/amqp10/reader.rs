//! Taking messages from an AMQP 1.0 queue one by one, for the commands that look at what a
//! queue holds (`explain --live`, `dlq replay`) rather than consume it.
//!
//! Each message is acquired (received unsettled) and then either accepted, which removes
//! it, or kept: a kept message stays unsettled, so the broker hands it to no one else and
//! never back to this reader, until [`Reader::close`] releases every kept one. `released`
//! gives a message back without counting a failed delivery. Credit is granted by hand, a
//! window at a time (see [`super::source`]).

use std::time::Duration;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::delivery::DeliveryInfo;

use super::codec::AmqpMessage;
use crate::config::model::Amqp10Connection;
use crate::pipeline::Node;

/// How long closing may take before the connection is dropped instead.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

pub struct Reader {
    link: super::Link,
    receiver: Receiver,
    credit: u32,
    kept: Vec<DeliveryInfo>,
    /// The address as the broker spells it.
    pub address: String,
}

impl Reader {
    /// Attaches a receiver named `link_name` to `name`, granting `credit` at a time.
    pub async fn open(
        connection: &Amqp10Connection,
        container: &str,
        link_name: String,
        (node, name): (Node, &str),
        credit: u32,
    ) -> Result<Reader, String> {
        let (address, _) = super::address(connection.flavor, node, name);
        let mut link =
            super::open(connection, container).await.map_err(|e| format!("cannot connect: {e}"))?;
        let attached =
            match super::source::attach(&mut link, connection.flavor, node, name, link_name, false)
                .await
            {
                Ok(mut r) => r.set_credit(credit).await.map(|()| r).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
        match attached {
            Ok(receiver) => Ok(Reader { link, receiver, credit, kept: Vec::new(), address }),
            Err(error) => {
                link.close().await;
                Err(error)
            }
        }
    }

    /// The next message, or `None` when none came within `wait`. Credit is granted again
    /// only when asked for more than the last window: a reader that stops after exactly the
    /// messages it wanted leaves the broker nothing more to send.
    pub async fn next(
        &mut self,
        wait: Duration,
    ) -> Result<Option<(DeliveryInfo, AmqpMessage)>, String> {
        use fe2o3_amqp::types::messaging::Body;
        use fe2o3_amqp::types::primitives::Value;
        if self.receiver.credit() == 0 {
            self.receiver
                .set_credit(self.credit)
                .await
                .map_err(|e| format!("cannot grant credit on {:?}: {e}", self.address))?;
        }
        match tokio::time::timeout(wait, self.receiver.recv::<Body<Value>>()).await {
            Err(_) => Ok(None),
            Ok(Err(error)) => Err(format!("cannot receive from {:?}: {error}", self.address)),
            Ok(Ok(delivery)) => Ok(Some(delivery.into_parts())),
        }
    }

    /// Removes a message from the queue.
    pub async fn accept(&self, info: DeliveryInfo) -> Result<(), String> {
        self.receiver
            .accept(info)
            .await
            .map_err(|e| format!("cannot settle a message on {:?}: {e}", self.address))
    }

    /// Leaves a message where it is; it goes back when the reader closes.
    pub fn keep(&mut self, info: DeliveryInfo) {
        self.kept.push(info);
    }

    /// Releases every kept message and detaches. Credit goes to zero first, so the broker
    /// does not hand the released messages straight back. What was received but neither
    /// accepted nor kept goes back too: the broker requeues whatever a link left unsettled,
    /// also when closing takes too long and the connection is simply dropped.
    pub async fn close(mut self) {
        let closing = async {
            let _ = self.receiver.set_credit(0).await;
            for info in self.kept.drain(..) {
                let _ = self.receiver.release(info).await;
            }
            let _ = self.receiver.close().await;
            self.link.close().await;
        };
        if tokio::time::timeout(CLOSE_DEADLINE, closing).await.is_err() {
            tracing::warn!(address = %self.address,
                "AMQP 1.0 link did not close in time; dropped it, the broker requeues its \
                 messages");
        }
    }
}
