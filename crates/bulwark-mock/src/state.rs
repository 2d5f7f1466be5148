//! The mock's shared, mutable state: the fault queue, the behaviour and the call
//! log. One lock, held only for short bookkeeping (never across an await).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::model::{Api, Behavior, BehaviorPatch, CallRecord, Fault, FaultRule, FaultRuleStatus};

/// The call log keeps the newest this many calls.
pub const CALL_LOG_CAPACITY: usize = 10_000;

pub(crate) struct MockState {
    started: Instant,
    /// The name given at start; `reset` goes back to it.
    default_name: String,
    /// A per-instance tag in response ids, so two mocks never hand out the same id.
    pub(crate) instance: String,
    inner: Mutex<Inner>,
}

struct Inner {
    rules: Vec<ActiveRule>,
    next_rule_id: u64,
    behavior: Behavior,
    calls: VecDeque<CallRecord>,
    next_seq: u64,
}

struct ActiveRule {
    id: u64,
    rule: FaultRule,
    remaining: Option<u32>,
    applied: u64,
}

/// What a new call brings, for the log.
pub(crate) struct NewCall {
    pub api: Api,
    pub path: String,
    pub query: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
}

impl MockState {
    pub(crate) fn new(name: &str) -> Self {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        MockState {
            started: Instant::now(),
            default_name: name.to_string(),
            instance: instance.chars().take(8).collect(),
            inner: Mutex::new(Inner {
                rules: Vec::new(),
                next_rule_id: 1,
                behavior: Behavior::named(name),
                calls: VecDeque::new(),
                next_seq: 1,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push_fault(&self, rule: FaultRule) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_rule_id;
        inner.next_rule_id += 1;
        let remaining = rule.times;
        // `times: 0` would never apply: keep it out of the queue altogether.
        if remaining != Some(0) {
            inner.rules.push(ActiveRule {
                id,
                rule,
                remaining,
                applied: 0,
            });
        }
        id
    }

    pub(crate) fn remove_fault(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let before = inner.rules.len();
        inner.rules.retain(|r| r.id != id);
        inner.rules.len() != before
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().rules.clear();
    }

    pub(crate) fn faults(&self) -> Vec<FaultRuleStatus> {
        self.lock()
            .rules
            .iter()
            .map(|r| FaultRuleStatus {
                id: r.id,
                fault: r.rule.fault.clone(),
                times: r.rule.times,
                api: r.rule.api,
                model: r.rule.model.clone(),
                remaining: r.remaining,
                applied: r.applied,
            })
            .collect()
    }

    /// The fault for this call, if a rule matches: the first matching rule in
    /// queue order. Uses up one of its times; a rule with none left is dropped.
    pub(crate) fn take_fault(&self, api: Api, model: Option<&str>, stream: bool) -> Option<Fault> {
        let mut inner = self.lock();
        let index = inner
            .rules
            .iter()
            .position(|r| r.rule.matches(api, model, stream))?;
        if let Some(p) = inner.rules[index].rule.probability
            && rand::random::<f64>() >= p
        {
            return None;
        }
        let rule = &mut inner.rules[index];
        rule.applied += 1;
        let fault = rule.rule.fault.clone();
        if let Some(left) = rule.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                inner.rules.remove(index);
            }
        }
        Some(fault)
    }

    pub(crate) fn behavior(&self) -> Behavior {
        self.lock().behavior.clone()
    }

    pub(crate) fn set_behavior(&self, behavior: Behavior) {
        self.lock().behavior = behavior;
    }

    pub(crate) fn update_behavior(&self, patch: &BehaviorPatch) -> Behavior {
        let mut inner = self.lock();
        patch.apply(&mut inner.behavior);
        inner.behavior.clone()
    }

    /// Logs a call and returns its sequence number.
    pub(crate) fn record_call(&self, call: NewCall, fault: Option<&Fault>) -> u64 {
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.calls.len() >= CALL_LOG_CAPACITY {
            inner.calls.pop_front();
        }
        inner.calls.push_back(CallRecord {
            seq,
            api: call.api,
            path: call.path,
            query: call.query,
            model: call.model,
            stream: call.stream,
            headers: call.headers,
            body: call.body,
            at_ms,
            fault: fault.map(|f| f.kind().to_string()),
            status: None,
        });
        seq
    }

    pub(crate) fn set_call_status(&self, seq: u64, status: u16) {
        let mut inner = self.lock();
        if let Some(call) = inner.calls.iter_mut().rev().find(|c| c.seq == seq) {
            call.status = Some(status);
        }
    }

    pub(crate) fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.iter().cloned().collect()
    }

    pub(crate) fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Clears faults and calls, and restores the default behaviour.
    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        inner.rules.clear();
        inner.calls.clear();
        inner.behavior = Behavior::named(self.default_name.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(api: Api) -> NewCall {
        NewCall {
            api,
            path: "/p".into(),
            query: None,
            model: Some("m".into()),
            stream: true,
            headers: BTreeMap::new(),
            body: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_rule_with_times_applies_exactly_that_often_then_goes() {
        let state = MockState::new("t");
        state.push_fault(FaultRule::new(Fault::Reset).times(2));
        assert_eq!(
            state.take_fault(Api::OpenAi, None, false),
            Some(Fault::Reset)
        );
        assert_eq!(state.faults()[0].remaining, Some(1));
        assert_eq!(state.faults()[0].applied, 1);
        assert_eq!(
            state.take_fault(Api::OpenAi, None, false),
            Some(Fault::Reset)
        );
        assert_eq!(state.take_fault(Api::OpenAi, None, false), None);
        assert!(state.faults().is_empty());
    }

    #[test]
    fn rules_apply_in_queue_order_skipping_ones_that_do_not_match() {
        let state = MockState::new("t");
        state.push_fault(FaultRule::new(Fault::Hang).api(Api::Gemini).times(1));
        state.push_fault(FaultRule::new(Fault::Reset).times(1));
        state.push_fault(FaultRule::new(Fault::status(500)));
        assert_eq!(
            state.take_fault(Api::OpenAi, None, false),
            Some(Fault::Reset)
        );
        assert_eq!(
            state.take_fault(Api::OpenAi, None, false),
            Some(Fault::status(500))
        );
        assert_eq!(
            state.take_fault(Api::Gemini, None, false),
            Some(Fault::Hang)
        );
        // The unlimited rule stays.
        assert_eq!(
            state.take_fault(Api::Gemini, None, false),
            Some(Fault::status(500))
        );
        assert_eq!(state.faults().len(), 1);
        assert_eq!(state.faults()[0].remaining, None);
    }

    #[test]
    fn a_stream_only_rule_is_not_used_up_by_a_json_call() {
        let state = MockState::new("t");
        state.push_fault(FaultRule::new(Fault::NoTerminator).times(1));
        assert_eq!(state.take_fault(Api::OpenAi, None, false), None);
        assert_eq!(state.faults()[0].remaining, Some(1));
        assert_eq!(
            state.take_fault(Api::OpenAi, None, true),
            Some(Fault::NoTerminator)
        );
    }

    #[test]
    fn reset_clears_everything_but_keeps_counting() {
        let state = MockState::new("orig");
        state.push_fault(FaultRule::new(Fault::Reset));
        state.set_behavior(Behavior::named("other"));
        let first = state.record_call(call(Api::OpenAi), None);
        state.reset();
        assert!(state.faults().is_empty());
        assert!(state.calls().is_empty());
        assert_eq!(state.behavior(), Behavior::named("orig"));
        let second = state.record_call(call(Api::Anthropic), Some(&Fault::Hang));
        assert!(second > first);
        let calls = state.calls();
        assert_eq!(calls[0].fault.as_deref(), Some("hang"));
        assert_eq!(calls[0].status, None);
        state.set_call_status(second, 200);
        assert_eq!(state.calls()[0].status, Some(200));
    }

    #[test]
    fn zero_times_is_never_queued() {
        let state = MockState::new("t");
        let id = state.push_fault(FaultRule::new(Fault::Reset).times(0));
        assert!(id > 0);
        assert!(state.faults().is_empty());
    }
}
