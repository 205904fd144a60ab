//! The control API's window onto a running sink.

use std::sync::Arc;

use crate::control;
use crate::filter::ClientFilter;
use crate::server::SinkState;
use crate::store::StoredMessage;

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
        m.push_str(&self.0.ledger.metrics_text());
        crate::process_metrics::write(&mut m);
        m
    }

    fn reset(&self, filter: &ClientFilter) {
        self.0.reset(filter);
    }

    fn info_json(&self) -> Option<serde_json::Value> {
        self.0.info.get().and_then(|i| serde_json::to_value(i).ok())
    }

    fn dns_json(&self) -> Option<serde_json::Value> {
        let d = self.0.dns.as_ref()?;
        serde_json::to_value(d.stats()).ok()
    }

    fn plan_yaml(&self, helo: Option<&str>) -> Option<String> {
        let e = self.0.engine.as_ref()?;
        match helo {
            Some(h) => e.scoped_plan_yaml(h),
            None => Some(e.plan_yaml().unwrap_or_else(|| "rules: []\n".into())),
        }
    }

    fn put_plan(
        &self,
        helo: Option<&str>,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Option<Result<(), String>> {
        let e = self.0.engine.as_ref()?;
        Some(match helo {
            Some(h) => e
                .load_scoped_bytes(h, body, content_type)
                .map_err(|e| e.to_string()),
            None => e
                .load_bytes(body, content_type, "PUT /plan")
                .map_err(|e| e.to_string()),
        })
    }

    fn delete_plan(&self, helo: Option<&str>) -> Option<()> {
        let e = self.0.engine.as_ref()?;
        match helo {
            Some(h) => e.unload_scoped(h).then_some(()),
            None => {
                e.unload();
                Some(())
            }
        }
    }

    fn clients_json(&self, filter: &ClientFilter) -> Option<serde_json::Value> {
        let r = self.0.engine.as_ref()?.referee_report_for(filter);
        serde_json::to_value(r).ok()
    }

    fn verdicts_json(&self, filter: &ClientFilter) -> Option<serde_json::Value> {
        serde_json::to_value(self.0.engine.as_ref()?.verdicts(filter)).ok()
    }

    fn ledger_json(&self, run: Option<&str>, filter: &ClientFilter) -> Option<serde_json::Value> {
        let l = &self.0.ledger;
        match run {
            None => serde_json::to_value(l.list_for(filter)).ok(),
            Some(r) => serde_json::to_value(l.run_for(r, filter)?).ok(),
        }
    }

    fn verdict_json(&self, id: &str) -> Option<serde_json::Value> {
        serde_json::to_value(self.0.engine.as_ref()?.verdict(id)?).ok()
    }

    fn messages(&self, filter: &ClientFilter) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .0
            .store
            .messages()
            .iter()
            .filter(|m| m.matches(filter))
            .map(|m| message_json(m, m.header("subject")))
            .collect();
        serde_json::Value::Array(list)
    }

    fn faults_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.0.engine.as_ref()?.faults_by_rule()).ok()
    }

    fn search_messages(&self, query: &str, limit: usize) -> serde_json::Value {
        // Newest first; only the listed messages are turned into JSON, and
        // a subject is read only when the envelope did not match.
        let all = self.0.store.messages();
        let q = query.to_lowercase();
        let has = |s: &str| s.to_lowercase().contains(&q);
        let mut matched = 0usize;
        let mut out = Vec::new();
        for m in all.iter().rev() {
            let envelope = q.is_empty() || has(&m.mail_from) || m.rcpt_to.iter().any(|r| has(r));
            let listed = out.len() < limit;
            let subject = (!envelope || listed).then(|| m.header("subject")).flatten();
            let hit = envelope || subject.as_deref().is_some_and(has);
            if hit {
                matched += 1;
                if out.len() < limit {
                    out.push(message_json(m, subject));
                }
            }
        }
        serde_json::json!({ "kept": all.len(), "matched": matched, "messages": out })
    }

    fn message_raw(&self, id: u64) -> Option<Vec<u8>> {
        self.0.store.get(id).map(|m| m.raw.clone())
    }

    fn clear_messages(&self, filter: &ClientFilter) {
        if filter.is_all() {
            self.0.store.clear();
        } else {
            self.0.store.remove_where(|m| m.matches(filter));
        }
    }
}

/// A kept message's metadata as JSON, with its subject.
fn message_json(m: &StoredMessage, subject: Option<String>) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("subject".into(), subject.into());
    }
    v
}
