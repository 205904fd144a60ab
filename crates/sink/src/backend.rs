//! The control API's window onto a running sink.

use std::sync::Arc;

use crate::control;
use crate::server::SinkState;

/// The control API's view of the sink.
pub(crate) struct Backend(pub(crate) Arc<SinkState>);

impl control::ControlBackend for Backend {
    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.0.stats.snapshot()).unwrap_or_default()
    }

    fn metrics_text(&self) -> String {
        let mut m = self.0.stats.snapshot().to_prometheus();
        if let Some(e) = &self.0.engine {
            m.push_str(&e.metrics_text());
        }
        m
    }

    fn reset(&self) {
        self.0.stats.reset();
        if let Some(e) = &self.0.engine {
            e.reset_referee();
            e.reset_state();
        }
    }

    fn plan_yaml(&self) -> Option<String> {
        let e = self.0.engine.as_ref()?;
        Some(e.plan_yaml().unwrap_or_else(|| "rules: []\n".into()))
    }

    fn put_plan(&self, body: &[u8], content_type: Option<&str>) -> Option<Result<(), String>> {
        let e = self.0.engine.as_ref()?;
        Some(
            e.load_bytes(body, content_type, "PUT /plan")
                .map_err(|e| e.to_string()),
        )
    }

    fn delete_plan(&self) -> Option<()> {
        self.0.engine.as_ref()?.unload();
        Some(())
    }

    fn clients_json(&self) -> Option<serde_json::Value> {
        Some(self.0.engine.as_ref()?.clients_json())
    }

    fn messages(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .0
            .store
            .messages()
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(&**m).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("subject".into(), m.header("subject").into());
                }
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }

    fn message_raw(&self, id: u64) -> Option<Vec<u8>> {
        self.0.store.get(id).map(|m| m.raw.clone())
    }

    fn clear_messages(&self) {
        self.0.store.clear();
    }
}
