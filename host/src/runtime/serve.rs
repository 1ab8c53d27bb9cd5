//! Serving one request: an instance from the route's pool (or a new one), the guest's
//! `handle` run under the request's deadline, its response head awaited on the caller's task,
//! and the instance given back only when it finished cleanly.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::error::classify_trap;
use super::outcome::GuestTask;
use super::pool::Instance;
use super::slice::Slice;
use super::{Handler, HandlerError, HostState, Running, Runtime, Scheme, WebSocketUpgrade, deadline, guest_output, outcome, state};

/// How long a request waits for an instance slot before it is answered 503.
const SLOT_WAIT: Duration = Duration::from_millis(100);

impl Runtime {
    /// A new instance of `handler` in its own store: the guest yields to the executor at
    /// every epoch tick and is interrupted at its current request's deadline.
    async fn instantiate(&self, handler: &Handler) -> Result<Instance, HandlerError> {
        match self.instantiate_once(handler).await {
            // Idle instances are a cache: when every slot is taken, they make room first.
            Err(HandlerError::Busy(_)) => {
                // One of this route's own may have come back while we waited: use it, rather
                // than drop it to make room for another just like it.
                if let Some(instance) = handler.pool.take() {
                    return Ok(instance);
                }
                for pool in self.live_pools() {
                    pool.evict_all();
                }
                self.instantiate_once(handler).await
            }
            other => other,
        }
    }

    async fn instantiate_once(&self, handler: &Handler) -> Result<Instance, HandlerError> {
        // `max_instances` is counted here, so it holds with the on-demand allocator too (the
        // pooling allocator's own limit is sized above it).
        // A short wait smooths a burst, and the moment between a response's last byte and
        // its instance going back to the pool.
        let slot = match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(HandlerError::Busy(self.limits.max_instances)),
        };
        let budget = guest_output::OutputBudget::new();
        let route = &handler.context.route;
        let wasi = WasiCtx::builder()
            .envs(&handler.env)
            .stdout(guest_output::GuestOutput::new(route, "stdout", budget.clone()))
            .stderr(guest_output::GuestOutput::new(route, "stderr", budget.clone()))
            .build();
        let state = HostState::new(wasi, budget, handler.config.clone(), handler.context.clone(), &self.limits, self.tunnels.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let slice = Slice::new(&self.ticks);
        let guest_slice = slice.clone();
        store.epoch_deadline_callback(move |store| {
            // tokio's yield_now puts the guest behind every other ready task; a plain yield
            // would wake it into its worker's LIFO slot and let it run again first.
            Ok(if store.data().deadline.passed() {
                UpdateDeadline::Interrupt
            } else if guest_slice.used_up() {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        // Instantiation runs the component's start functions: under a deadline too.
        store.data_mut().deadline = deadline::Deadline::new(std::time::Instant::now() + self.limits.request_timeout);
        store.set_epoch_deadline(1);
        match slice.run(handler.pre.instantiate_async(&mut store)).await {
            Ok(proxy) => {
                handler.context.metrics.record_instance(&handler.context.route);
                Ok(Instance { store, proxy, served: 0, slice, _slot: slot })
            }
            Err(error) if error.is::<wasmtime::PoolConcurrencyLimitError>() => Err(HandlerError::Busy(self.limits.max_instances)),
            Err(error) => Err(classify_trap(&error, store.data().limits.refused(), self.limits.request_timeout, self.limits.memory_bytes)),
        }
    }

    /// Runs one request on a warm instance of `handler`, or a new one.
    ///
    /// `params` are the route parameters (`/users/:id`); the guest reads them from
    /// `wasi:config/store` as `params.NAME`. `scheme` is how the request arrived.
    pub async fn serve<B>(
        self: &Arc<Self>,
        handler: &Handler,
        params: &std::collections::BTreeMap<String, String>,
        scheme: Scheme,
        request: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, HandlerError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        let (response_sender, response) = tokio::sync::oneshot::channel();
        let (outcome_sender, outcome) = tokio::sync::oneshot::channel();
        let turn = Turn {
            config: handler.request_config(params),
            deadline: deadline::Deadline::new(deadline.into_std()),
            outcome: outcome_sender,
            scheme,
        };
        let body_deadline = turn.deadline.clone();
        let running = Running::start(&self.running);
        let runtime = self.clone();
        let guest_handler = handler.clone();
        let guest: GuestRun = Box::pin(async move {
            let _running = running;
            let run = std::panic::AssertUnwindSafe(runtime.run_guest(&guest_handler, turn, request, response_sender));
            // A host bug that panics fails this request, not the caller's connection.
            futures_util::FutureExt::catch_unwind(run)
                .await
                .unwrap_or_else(|_| Err(HandlerError::Trap("the host failed while running the handler".into())))
        });
        let (response, still_running) = self.wait_for_response(deadline, response, guest).await?;
        let stream_idle = self.limits.stream_idle_timeout;
        Ok(response
            .map(|body| outcome::GuardedBody::wrap(body, outcome, body_deadline, stream_idle, handler.context.clone(), still_running)))
    }

    /// Drives `guest` on the caller's task until it sets its response head, or why it set
    /// none by `deadline`. Most guests (every forward, every answer made in one go) have
    /// returned by then; one still running (streaming its body) goes on as a task of its
    /// own, returned to be ended if its caller goes away. So a request costs no task and no
    /// cross-task wakeup unless its guest needs one.
    ///
    /// A caller that goes away before the head drops this future, and the guest with it:
    /// its instance and its slot are free at once, and a request it has in flight upstream
    /// is audited as abandoned (`state::Sending`).
    async fn wait_for_response(
        &self,
        deadline: tokio::time::Instant,
        mut response: tokio::sync::oneshot::Receiver<GuestResponse>,
        mut guest: GuestRun,
    ) -> Result<(hyper::Response<HyperOutgoingBody>, Option<GuestTask>), HandlerError> {
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(timeout);
        let woke = tokio::select! {
            biased;
            finished = &mut guest => Woke::Finished(finished),
            head = &mut response => Woke::Head(head),
            () = &mut timeout => Woke::Deadline,
        };
        match woke {
            Woke::Finished(finished) => match response.try_recv() {
                Ok(Ok(response)) => Ok((response, None)),
                Ok(Err(code)) => Err(HandlerError::Guest(code)),
                // The guest dropped its response outparam: its result says why.
                Err(_) => Err(finished.err().unwrap_or(HandlerError::NoResponse)),
            },
            Woke::Head(head) => {
                // A guest that was suspended in a host call (every forward is) while its time
                // slice ran out yields at its first epoch check after, usually just after
                // setting its head and just before returning. One more turn here lets it
                // return on this task: its outcome is known before the body is polled, so a
                // short body leaves with the head in one write, and it needs no task of its
                // own. One still running after that (streaming its body) goes on as a task;
                // how it ends reaches the body through its outcome.
                let turn = std::future::poll_fn(|cx| std::task::Poll::Ready(guest.as_mut().poll(cx))).await;
                let still_running = turn.is_pending().then(|| GuestTask::new(&tokio::spawn(guest)));
                match head {
                    Ok(Ok(response)) => Ok((response, still_running)),
                    Ok(Err(code)) => Err(HandlerError::Guest(code)),
                    Err(_closed) => Err(HandlerError::NoResponse),
                }
            }
            // Past the deadline the guest is ended (dropped with this future), not carried on.
            Woke::Deadline => Err(HandlerError::Timeout(self.limits.request_timeout)),
        }
    }

    /// Runs the guest's `handle` for one request, on a pooled or new instance, and puts
    /// the instance back when it finished cleanly.
    async fn run_guest<B>(
        &self,
        handler: &Handler,
        turn: Turn,
        mut request: hyper::Request<B>,
        response: tokio::sync::oneshot::Sender<GuestResponse>,
    ) -> Result<(), HandlerError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut instance = match handler.pool.take() {
            Some(instance) => instance,
            None => self.instantiate(handler).await?,
        };
        instance.served += 1;
        let deadline = turn.deadline.clone();
        // A copy of the caller's headers costs a few reference counts (names and values are
        // shared bytes); a forward then sends them on without converting each one twice.
        let caller_headers = request.headers().clone();
        // wasi-http's request conversion drops extensions, the caller's upgrade with them.
        let upgrade = request.extensions_mut().remove::<WebSocketUpgrade>();
        instance.store.data_mut().begin_request(turn.config, turn.deadline, turn.outcome, caller_headers, upgrade);
        instance.store.set_epoch_deadline(1);
        let mut http = instance.store.data_mut().http();
        let request = match http.new_incoming_request(turn.scheme, request) {
            Ok(request) => request,
            Err(error) => {
                // The guest never saw it: the instance is as good as before.
                drop(instance.store.data_mut().end_request());
                handler.pool.give_back(instance);
                return Err(HandlerError::BadRequest(error.to_string()));
            }
        };
        let outparam = http.new_response_outparam(response).map_err(|e| HandlerError::Instantiate(format!("{e:#}")))?;
        let call = instance.proxy.wasi_http_incoming_handler().call_handle(&mut instance.store, request, outparam);
        let returned = until_deadline(instance.slice.run(call), &deadline).await;
        self.finish(handler, instance, returned)
    }

    /// Decides what a guest's return (or its deadline) means for the request and for the
    /// instance: only an instance that returned cleanly and holds nothing serves again.
    fn finish(&self, handler: &Handler, mut instance: Instance, returned: Option<wasmtime::Result<()>>) -> Result<(), HandlerError> {
        let timeout = self.limits.request_timeout;
        match returned {
            // Returned, but still holding its response body or other HTTP resources: the
            // request is not finished, and the instance must not serve another.
            Some(Ok(())) => match instance.store.data_mut().leftovers() {
                state::Leftovers::Unfinished => {
                    crate::warn_limited!(route = %handler.context.route, "the handler returned without finishing its response body; the response is cut off");
                    Err(HandlerError::Trap("the handler returned without finishing its response body".into()))
                }
                leftovers => {
                    let outcome = instance.store.data_mut().end_request();
                    if leftovers == state::Leftovers::Clean {
                        handler.pool.give_back(instance);
                    } else {
                        // The answer is whole; only this instance must not serve again. It is
                        // dropped before the outcome is sent, so its slot is free by then.
                        drop(instance);
                    }
                    if let Some(outcome) = outcome {
                        let _ = outcome.send(outcome::Outcome::Succeeded);
                    }
                    Ok(())
                }
            },
            Some(Err(error)) => Err(classify_trap(&error, instance.store.data().limits.refused(), timeout, self.limits.memory_bytes)),
            None => Err(HandlerError::Timeout(timeout)),
        }
    }
}

/// What [`Runtime::wait_for_response`] woke up to first.
enum Woke {
    Finished(Result<(), HandlerError>),
    Head(Result<GuestResponse, tokio::sync::oneshot::error::RecvError>),
    Deadline,
}

/// A guest's run for one request, from instance to return.
type GuestRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send>>;

/// What one request brings to the instance that serves it.
struct Turn {
    /// The guest's `wasi:config/store` for this request.
    config: Arc<WasiConfigVariables>,
    deadline: deadline::Deadline,
    /// Told how the request ended once its response body is done.
    outcome: tokio::sync::oneshot::Sender<outcome::Outcome>,
    scheme: Scheme,
}

/// What a guest sets its response outparam to.
type GuestResponse = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

impl Handler {
    /// The guest's `wasi:config/store` for one request: the route's options, plus its
    /// parameters as `params.NAME`. Only routes with parameters pay for a copy.
    fn request_config(&self, params: &std::collections::BTreeMap<String, String>) -> Arc<WasiConfigVariables> {
        if params.is_empty() {
            return self.config.clone();
        }
        let mut vars = WasiConfigVariables::new();
        for (key, value) in self.options.iter() {
            vars.insert(key.clone(), value.clone());
        }
        for (key, value) in params {
            vars.insert(format!("params.{key}"), value.clone());
        }
        Arc::new(vars)
    }
}

/// Drives `call` until it returns or `deadline` passes (`None`). A guest waiting on the host
/// is not interrupted by the epoch, so this is what ends it then; the deadline may move
/// while the response streams.
async fn until_deadline<T>(call: impl std::future::Future<Output = T>, deadline: &deadline::Deadline) -> Option<T> {
    let mut call = std::pin::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => return Some(result),
            () = tokio::time::sleep_until(deadline.get().into()) => {
                if deadline.passed() {
                    return None;
                }
            }
        }
    }
}
