//! The agent's four booking tools, their JSON Schemas, and the one entry point the bridge
//! calls with a tool name and the model's argument text.
//!
//! Privacy: each call's tools act for a [`Caller`]. With a number a trusted trunk asserted,
//! `find_bookings` and `cancel_booking` reach only that number's bookings. Without one,
//! `find_bookings` gives dates and times but never names or booking ids, and `cancel_booking`
//! needs the booking id and the phone number it was booked with. A booking of another number
//! is answered exactly like a booking that does not exist.
//!
//! Nothing here fails towards the model: every problem (bad JSON, a bad argument, a rule of the
//! schedule, a taken slot, a database fault) comes back as `{"error": true, "message": …}`
//! with a sentence the model can say to the caller, and the call goes on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use futures::FutureExt;
use phonenumber::country::Id as Region;
use serde_json::{json, Map, Value};

use super::caller::Caller;
use super::clock::Clock;
use super::error::{BookingConfigError, InsertError, StoreError};
use super::schedule::{parse_hhmm, speak_date, speak_time, Schedule};
use super::store::{Booking, NewBooking, Status, Store};
use super::{code, name, phone, BookingConfig};

/// The tool names, as the model sees them.
pub const TOOL_NAMES: [&str; 4] = [
    "check_availability",
    "create_booking",
    "cancel_booking",
    "find_bookings",
];

/// Longest argument text read; a model's real arguments are a few hundred bytes.
const MAX_ARGUMENTS_BYTES: usize = 16 * 1024;

/// How many alternatives a taken slot offers.
const NEAREST_FREE: usize = 3;

/// What a caller hears when the database fails.
const DATABASE_TROUBLE: &str = "I'm sorry, the appointment system is not answering right now. \
     Please try again in a moment, or I can take a message.";

/// What a verified caller hears when the model asks about another number.
const OTHER_NUMBER: &str = "For privacy, I can only look up appointments booked with the number \
     you are calling from. Bookings of another number can only be looked up by calling from that number.";

/// A refusal: a sentence for the caller and optional structured extras for the model.
#[derive(Debug)]
struct Refusal {
    message: String,
    extra: Option<(&'static str, Value)>,
}

impl Refusal {
    fn say(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            extra: None,
        }
    }

    fn into_json(self) -> Value {
        let mut obj = Map::new();
        obj.insert("error".into(), Value::Bool(true));
        obj.insert("message".into(), Value::String(self.message));
        if let Some((k, v)) = self.extra {
            obj.insert(k.into(), v);
        }
        Value::Object(obj)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "booking tool: database fault");
        Refusal::say(DATABASE_TROUBLE)
    }
}

/// The booking tools bound to a store, the schedule rules and a clock.
#[derive(Debug, Clone)]
pub struct Tools {
    store: Store,
    schedule: Schedule,
    region: Region,
    clock: Arc<dyn Clock>,
}

impl Tools {
    /// Tools over `store` with the rules of `config`, telling the time by `clock`.
    pub fn new(
        store: Store,
        config: &BookingConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BookingConfigError> {
        let schedule = Schedule::from_config(config)?;
        let region = phone::parse_region(&config.default_region)
            .map_err(|m| BookingConfigError::new("default_region", m))?;
        Ok(Self {
            store,
            schedule,
            region,
            clock,
        })
    }

    /// The store the tools use (the admin API reads bookings and calls through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The caller of a call whose trunk asserted `number` (see [`Caller::from_asserted`]),
    /// with this config's default region.
    pub fn caller(&self, number: Option<&str>) -> Caller {
        Caller::from_asserted(number, self.region)
    }

    /// The schedule rules in force.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The `tools` entries of a Realtime session: one
    /// `{"type":"function","name",…,"description",…,"parameters":{JSON Schema}}` per tool.
    pub fn definitions() -> Vec<Value> {
        let date = |what: &str| json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": format!("{what}, as YYYY-MM-DD.")});
        let phone = json!({"type": "string", "minLength": 3, "maxLength": 40,
            "description": "The caller's phone number with all digits, with country code if they gave one, e.g. +1 201 555 0123."});
        let booked_with = json!({"type": "string", "minLength": 3, "maxLength": 40,
            "description": "The phone number the booking was made with, all digits. Needed unless the caller's own number is known to the system (then it may be left out)."});
        vec![
            json!({
                "type": "function",
                "name": "check_availability",
                "description": "Lists the free appointment start times between two dates (at most 31 days). Use it before offering times to the caller.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "start_date": date("First day to search"),
                        "end_date": date("Last day to search (the same as start_date for one day)"),
                    },
                    "required": ["start_date", "end_date"],
                    "additionalProperties": false
                }
            }),
            json!({
                "type": "function",
                "name": "create_booking",
                "description": "Books one appointment at a free start time. Returns a booking id, which is the confirmation code to read to the caller letter by letter.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "patient_name": {"type": "string", "minLength": 1, "maxLength": name::MAX_NAME_CHARS,
                            "description": "The patient's full name."},
                        "phone": phone.clone(),
                        "date": date("Day of the appointment"),
                        "time": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$",
                            "description": "Start time on the 24-hour clock, as HH:MM, e.g. 14:30."}
                    },
                    "required": ["patient_name", "phone", "date", "time"],
                    "additionalProperties": false
                }
            }),
            json!({
                "type": "function",
                "name": "cancel_booking",
                "description": "Cancels an appointment by its booking id (the confirmation code: three letters and three digits, e.g. KTH472) and the phone number it was booked with. Only bookings made with the caller's number can be cancelled. To move an appointment, book the new time first, then cancel the old one.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "booking_id": {"type": "string", "description": "The booking id / confirmation code, e.g. KTH472."},
                        "phone": booked_with.clone()
                    },
                    "required": ["booking_id"],
                    "additionalProperties": false
                }
            }),
            json!({
                "type": "function",
                "name": "find_bookings",
                "description": "Lists the caller's own upcoming appointments, found by the phone number they were booked with. When the caller's number is known to the system only that number's bookings are found; otherwise names and booking ids are not given out.",
                "parameters": {
                    "type": "object",
                    "properties": { "phone": booked_with },
                    "required": [],
                    "additionalProperties": false
                }
            }),
        ]
    }

    /// Runs tool `name` for a caller without a verified number (see [`Tools::call_as`]).
    pub async fn call(&self, name: &str, arguments_json: &str) -> Value {
        self.call_as(&Caller::Unverified, name, arguments_json)
            .await
    }

    /// Runs tool `name` with the model's `arguments_json` for `caller` and returns the JSON to
    /// send back as the function call's output. Never fails: problems come back as
    /// `{"error": true, "message": "…"}`.
    pub async fn call_as(&self, caller: &Caller, name: &str, arguments_json: &str) -> Value {
        // A bug here must not end the caller's call: a panic becomes one more spoken error.
        let run = std::panic::AssertUnwindSafe(self.dispatch(caller, name, arguments_json))
            .catch_unwind();
        let result = run.await.unwrap_or_else(|_| {
            tracing::error!(tool = %truncate(name, 60), "booking tool panicked");
            Err(Refusal::say(DATABASE_TROUBLE))
        });
        tracing::debug!(tool = %truncate(name, 60), ok = result.is_ok(), "booking tool called");
        result.unwrap_or_else(Refusal::into_json)
    }

    async fn dispatch(
        &self,
        caller: &Caller,
        name: &str,
        arguments_json: &str,
    ) -> Result<Value, Refusal> {
        let args = parse_arguments(arguments_json)?;
        match name {
            "check_availability" => self.check_availability(&args).await,
            "create_booking" => self.create_booking(&args).await,
            "cancel_booking" => self.cancel_booking(caller, &args).await,
            "find_bookings" => self.find_bookings(caller, &args).await,
            other => Err(Refusal::say(format!(
                "There is no tool called {:?}; the booking tools are {}.",
                truncate(other, 60),
                TOOL_NAMES.join(", ")
            ))),
        }
    }

    async fn check_availability(&self, args: &Map<String, Value>) -> Result<Value, Refusal> {
        let now = self.clock.now();
        let start = self.date_arg(args, "start_date", now)?;
        let end = self.date_arg(args, "end_date", now)?;
        let (from, to) = self
            .schedule
            .check_range(start, end, now)
            .map_err(|e| self.with_today(e, now))?;
        let taken = self.taken_by_day(from, to).await?;
        let empty = HashSet::new();
        let mut days = Vec::new();
        let mut total = 0;
        let mut d = from;
        while d <= to {
            if !self.schedule.opening(d).is_empty() {
                let free = self
                    .schedule
                    .free_slots(d, now, taken.get(&d).unwrap_or(&empty));
                total += free.len();
                days.push(json!({
                    "date": d.to_string(),
                    "weekday": d.format("%A").to_string(),
                    "free": free.iter().map(|t| speak_time(*t)).collect::<Vec<_>>(),
                }));
            }
            d += Duration::days(1);
        }
        let mut message = if total == 0 {
            format!(
                "There are no free appointments from {} to {}.",
                speak_date(from),
                speak_date(to)
            )
        } else {
            format!(
                "{total} free appointment times from {} to {}.",
                speak_date(from),
                speak_date(to)
            )
        };
        if to < end {
            message.push_str(&format!(
                " Appointments can only be booked up to {}.",
                speak_date(to)
            ));
        }
        Ok(json!({
            "today": self.schedule.today(now).to_string(),
            "time_zone": self.schedule.time_zone().name(),
            "slot_minutes": self.schedule.slot_minutes(),
            "start_date": from.to_string(),
            "end_date": to.to_string(),
            "free_count": total,
            "days": days,
            "message": message,
        }))
    }

    async fn create_booking(&self, args: &Map<String, Value>) -> Result<Value, Refusal> {
        let now = self.clock.now();
        let patient_name = name::clean(&string_arg(args, "patient_name", "the patient's name")?)
            .map_err(Refusal::say)?;
        let phone = phone::normalize(&string_arg(args, "phone", "the phone number")?, self.region)
            .map_err(Refusal::say)?;
        let date = self.date_arg(args, "date", now)?;
        let time = time_arg(args, "time")?;
        self.schedule
            .check_slot(date, time, now)
            .map_err(|e| self.with_today(e, now))?;
        let new = NewBooking {
            patient_name,
            phone,
            date,
            time,
        };
        match self.store.insert_booking(&new, now).await {
            Ok(b) => Ok(booked_json(&b, false)),
            Err(InsertError::SlotTaken) => {
                // The same caller asking again for the slot they already hold (a retried
                // call) gets their booking back, not a refusal.
                if let Some(b) = self.store.active_booking_at(date, time).await? {
                    if b.phone == new.phone
                        && b.patient_name.to_lowercase() == new.patient_name.to_lowercase()
                    {
                        return Ok(booked_json(&b, true));
                    }
                }
                let nearest = self.nearest_free(date, time, now).await?;
                let mut message = format!(
                    "{} at {} is already taken.",
                    speak_date(date),
                    speak_time(time)
                );
                if nearest.is_empty() {
                    message
                        .push_str(" There are no free times close to it; please try another week.");
                } else {
                    let said: Vec<String> = nearest
                        .iter()
                        .map(|(d, t)| format!("{} at {}", speak_date(*d), speak_time(*t)))
                        .collect();
                    message.push_str(&format!(" The nearest free times are {}.", said.join("; ")));
                }
                let list: Vec<Value> = nearest
                    .iter()
                    .map(|(d, t)| json!({"date": d.to_string(), "time": speak_time(*t)}))
                    .collect();
                Err(Refusal {
                    message,
                    extra: Some(("nearest_free", Value::Array(list))),
                })
            }
            Err(InsertError::Store(e)) => Err(e.into()),
        }
    }

    async fn cancel_booking(
        &self,
        caller: &Caller,
        args: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let now = self.clock.now();
        let said = string_arg(args, "booking_id", "the booking id")?;
        let Some(code) = code::normalize(&said) else {
            return Err(Refusal::say(format!(
                "{:?} is not a booking id; booking ids are three letters and three digits, like KTH472.",
                truncate(&said, 40)
            )));
        };
        // Whose bookings this caller may cancel: the verified number's, else the number the
        // caller says the booking was made with (with the code, two things a stranger lacks).
        let (phone, whose) = match caller {
            Caller::Verified(own) => (own.clone(), "the number you are calling from"),
            Caller::Unverified => {
                let said = optional_string_arg(args, "phone")?.ok_or_else(|| {
                    Refusal::say(
                        "To cancel, I need the phone number the booking was made with as well as \
                         the booking id; please ask the caller for it.",
                    )
                })?;
                (self.phone(&said)?, "that phone number")
            }
        };
        // Another number's booking is answered exactly as a missing one: no way to learn
        // whether a code exists.
        let not_found = || {
            Refusal::say(format!(
                "There is no booking with the id {} made with {whose}.",
                code::spoken(&code)
            ))
        };
        let existing = match self.store.booking_by_code(&code).await? {
            Some(b) if b.phone == phone => b,
            _ => return Err(not_found()),
        };
        if existing.status == Status::Cancelled {
            return Err(Refusal::say(format!(
                "Booking {} was already cancelled.",
                code::spoken(&code)
            )));
        }
        if self
            .schedule
            .instant(existing.date, existing.time)
            .is_none_or(|at| at <= now)
        {
            return Err(Refusal::say(format!(
                "Booking {} was for {} at {}, which has already passed.",
                code::spoken(&code),
                speak_date(existing.date),
                speak_time(existing.time)
            )));
        }
        let Some(b) = self.store.cancel_booking(&code, &phone, now).await? else {
            // Cancelled by someone else between the two statements.
            return Err(Refusal::say(format!(
                "Booking {} was already cancelled.",
                code::spoken(&code)
            )));
        };
        let mut out = json!({
            "cancelled": true,
            "booking_id": b.code,
            "date": b.date.to_string(),
            "time": speak_time(b.time),
            "message": format!("Cancelled the appointment on {} at {}.", speak_date(b.date), speak_time(b.time)),
        });
        // The name only to the number's own line: a caller who knows a code and a number
        // does not learn whose appointment it was.
        if caller.number().is_some() {
            out["patient_name"] = Value::String(b.patient_name.clone());
            out["message"] = Value::String(format!(
                "Cancelled the appointment for {} on {} at {}.",
                b.patient_name,
                speak_date(b.date),
                speak_time(b.time)
            ));
        }
        Ok(out)
    }

    async fn find_bookings(
        &self,
        caller: &Caller,
        args: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let now = self.clock.now();
        let said = optional_string_arg(args, "phone")?;
        let phone =
            match (caller, said) {
                (Caller::Verified(own), None) => own.clone(),
                (Caller::Verified(own), Some(said)) => {
                    if self.phone(&said)? != *own {
                        return Err(Refusal::say(OTHER_NUMBER));
                    }
                    own.clone()
                }
                (Caller::Unverified, Some(said)) => self.phone(&said)?,
                (Caller::Unverified, None) => return Err(Refusal::say(
                    "The argument phone (the phone number the bookings were made with) is missing.",
                )),
            };
        let verified = caller.number().is_some();
        let today = self.schedule.today(now);
        let found = self.store.active_bookings_for_phone(&phone, today).await?;
        let upcoming: Vec<&Booking> = found
            .iter()
            .filter(|b| {
                self.schedule
                    .instant(b.date, b.time)
                    .is_some_and(|at| at > now)
            })
            .collect();
        let mut message = match upcoming.len() {
            0 => format!("There are no upcoming appointments for {phone}."),
            1 => format!(
                "One upcoming appointment: {} at {}.",
                speak_date(upcoming[0].date),
                speak_time(upcoming[0].time)
            ),
            n => format!("{n} upcoming appointments."),
        };
        if !verified && !upcoming.is_empty() {
            message.push_str(
                " The caller's number is not verified on this line, so names and booking ids are \
                 not given out: to cancel, the caller needs the booking id from their confirmation.",
            );
        }
        let list: Vec<Value> = upcoming
            .iter()
            .map(|b| {
                let mut v = json!({
                    "date": b.date.to_string(),
                    "weekday": b.date.format("%A").to_string(),
                    "time": speak_time(b.time),
                });
                if verified {
                    v["booking_id"] = Value::String(b.code.clone());
                    v["patient_name"] = Value::String(b.patient_name.clone());
                }
                v
            })
            .collect();
        Ok(json!({
            "phone": phone,
            "verified_caller": verified,
            "bookings": list,
            "message": message,
        }))
    }

    /// A phone number argument in E.164 form, or the sentence saying it did not parse.
    fn phone(&self, said: &str) -> Result<String, Refusal> {
        phone::normalize(said, self.region).map_err(Refusal::say)
    }

    /// The active bookings from `from` to `to`, grouped by day.
    async fn taken_by_day(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<HashMap<NaiveDate, HashSet<NaiveTime>>, StoreError> {
        let mut by_day: HashMap<NaiveDate, HashSet<NaiveTime>> = HashMap::new();
        for (d, t) in self.store.taken_slots(from, to).await? {
            by_day.entry(d).or_default().insert(t);
        }
        Ok(by_day)
    }

    /// The free slots closest in time to a taken one, searching a few days either side.
    async fn nearest_free(
        &self,
        date: NaiveDate,
        time: NaiveTime,
        now: DateTime<Utc>,
    ) -> Result<Vec<(NaiveDate, NaiveTime)>, StoreError> {
        let from = (date - Duration::days(3)).max(self.schedule.today(now));
        let to = (date + Duration::days(7)).min(self.schedule.last_bookable(now));
        let taken = self.taken_by_day(from, to).await?;
        let empty = HashSet::new();
        let wanted = date.and_time(time);
        let mut free = Vec::new();
        let mut d = from;
        while d <= to {
            for t in self
                .schedule
                .free_slots(d, now, taken.get(&d).unwrap_or(&empty))
            {
                free.push((d, t));
            }
            d += Duration::days(1);
        }
        free.sort_by_key(|(d, t)| ((d.and_time(*t) - wanted).num_minutes().abs(), *d, *t));
        free.truncate(NEAREST_FREE);
        free.sort();
        Ok(free)
    }

    fn date_arg(
        &self,
        args: &Map<String, Value>,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<NaiveDate, Refusal> {
        let s = string_arg(args, key, key)?;
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
            let today = self.schedule.today(now);
            Refusal::say(format!(
                "{key} {:?} is not a date in the form YYYY-MM-DD; today is {} ({today}).",
                truncate(&s, 40),
                speak_date(today)
            ))
        })
    }

    /// A schedule refusal, with today's date attached so the model can correct itself.
    fn with_today(&self, e: impl std::fmt::Display, now: DateTime<Utc>) -> Refusal {
        Refusal {
            message: e.to_string(),
            extra: Some(("today", Value::String(self.schedule.today(now).to_string()))),
        }
    }
}

fn booked_json(b: &Booking, already: bool) -> Value {
    let spoken = code::spoken(&b.code);
    let message = if already {
        format!(
            "{} already has this appointment on {} at {}. The confirmation code is {spoken}.",
            b.patient_name,
            speak_date(b.date),
            speak_time(b.time)
        )
    } else {
        format!(
            "Booked {} on {} at {}. The confirmation code is {spoken}.",
            b.patient_name,
            speak_date(b.date),
            speak_time(b.time)
        )
    };
    json!({
        "booked": true,
        "already_booked": already,
        "booking_id": b.code,
        "confirmation_code": b.code,
        "confirmation_code_spoken": spoken,
        "patient_name": b.patient_name,
        "phone": b.phone,
        "date": b.date.to_string(),
        "weekday": b.date.format("%A").to_string(),
        "time": speak_time(b.time),
        "message": message,
    })
}

fn parse_arguments(text: &str) -> Result<Map<String, Value>, Refusal> {
    if text.len() > MAX_ARGUMENTS_BYTES {
        return Err(Refusal::say("The tool arguments are far too long; please call the tool again with just the needed fields."));
    }
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Refusal::say("The tool arguments must be a JSON object.")),
        Err(_) => Err(Refusal::say(
            "The tool arguments are not valid JSON; please call the tool again.",
        )),
    }
}

/// A required text argument; numbers are taken as their digits (a phone number sent as one).
fn string_arg(args: &Map<String, Value>, key: &str, what: &str) -> Result<String, Refusal> {
    match args.get(key) {
        None | Some(Value::Null) => Err(Refusal::say(format!(
            "The argument {key}{} is missing.",
            gloss(key, what)
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(Refusal::say(format!(
            "The argument {key}{} must be text.",
            gloss(key, what)
        ))),
    }
}

/// An optional text argument (absent, null or blank is `None`).
fn optional_string_arg(args: &Map<String, Value>, key: &str) -> Result<Option<String>, Refusal> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(_) => string_arg(args, key, key).map(Some),
    }
}

fn gloss(key: &str, what: &str) -> String {
    if key == what {
        String::new()
    } else {
        format!(" ({what})")
    }
}

/// `HH:MM` (also `H:MM`, or `HH:MM:00`) on the 24-hour clock.
fn time_arg(args: &Map<String, Value>, key: &str) -> Result<NaiveTime, Refusal> {
    let s = string_arg(args, key, "the start time")?;
    let t = s.trim();
    let padded = if t.len() == 4 {
        format!("0{t}")
    } else {
        t.to_string()
    };
    let hhmm = padded
        .strip_suffix(":00")
        .filter(|p| p.len() == 5)
        .unwrap_or(&padded);
    parse_hhmm(hhmm).ok_or_else(|| {
        Refusal::say(format!(
            "{key} {:?} is not a time in the form HH:MM on the 24-hour clock, like 09:30 or 14:00.",
            truncate(&s, 40)
        ))
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::FixedClock;

    async fn tools() -> Tools {
        let store = Store::open("sqlite::memory:", 1).await.unwrap();
        let now: DateTime<Utc> = "2026-11-24T08:00:00Z".parse().unwrap();
        Tools::new(
            store,
            &BookingConfig::default(),
            Arc::new(FixedClock::new(now)),
        )
        .unwrap()
    }

    async fn book(t: &Tools, name: &str, phone: &str, time: &str) -> String {
        let args =
            json!({"patient_name": name, "phone": phone, "date": "2026-11-25", "time": time});
        let out = t.call("create_booking", &args.to_string()).await;
        out["booking_id"].as_str().expect("booked").to_string()
    }

    #[tokio::test]
    async fn a_verified_caller_reaches_only_their_numbers_bookings() {
        let t = tools().await;
        let own = book(&t, "Ada Lovelace", "2015550123", "10:00").await;
        let other = book(&t, "Grace Hopper", "2015550199", "10:30").await;
        let me = t.caller(Some("+12015550123"));
        assert_eq!(me.number(), Some("+12015550123"));
        let found = t.call_as(&me, "find_bookings", "").await;
        assert_eq!(found["bookings"][0]["booking_id"], own.as_str(), "{found}");
        assert_eq!(found["bookings"].as_array().unwrap().len(), 1);
        let refused = t
            .call_as(&me, "find_bookings", r#"{"phone":"2015550199"}"#)
            .await;
        assert_eq!(refused["error"], true);
        assert!(!refused.to_string().contains("Grace"), "{refused}");
        for args in [
            json!({"booking_id": other}),
            json!({"booking_id": other, "phone": "2015550199"}),
        ] {
            let out = t.call_as(&me, "cancel_booking", &args.to_string()).await;
            assert_eq!(out["error"], true, "{out}");
        }
        let b = t.store().booking_by_code(&other).await.unwrap().unwrap();
        assert_eq!(b.status, Status::Active);
        // a number that does not parse gives no verified caller
        assert_eq!(t.caller(Some("anonymous")), Caller::Unverified);
    }

    #[tokio::test]
    async fn an_unverified_line_gets_no_names_or_codes_and_cancels_with_the_number() {
        let t = tools().await;
        let other = book(&t, "Grace Hopper", "2015550199", "10:30").await;
        let found = t.call("find_bookings", r#"{"phone":"2015550199"}"#).await;
        let text = found.to_string();
        assert_eq!(found["bookings"].as_array().unwrap().len(), 1, "{text}");
        assert!(!text.contains("Grace") && !text.contains(&other), "{text}");
        let missing_number = t
            .call("cancel_booking", &json!({"booking_id": other}).to_string())
            .await;
        assert!(missing_number["message"]
            .as_str()
            .unwrap()
            .contains("phone number"));
        let wrong = json!({"booking_id": other, "phone": "2015550123"}).to_string();
        let wrong = t.call("cancel_booking", &wrong).await;
        assert_eq!(wrong["error"], true, "{wrong}");
        // a wrong number and a code that does not exist are answered alike
        let none = json!({"booking_id": "XXX999", "phone": "2015550123"}).to_string();
        let none = t.call("cancel_booking", &none).await;
        assert_eq!(
            wrong["message"]
                .as_str()
                .unwrap()
                .replace(&code::spoken(&other), "#"),
            none["message"]
                .as_str()
                .unwrap()
                .replace("X X X 9 9 9", "#")
        );
        let right = json!({"booking_id": other, "phone": "+1 201 555 0199"}).to_string();
        let right = t.call("cancel_booking", &right).await;
        assert_eq!(right["cancelled"], true, "{right}");
        assert!(!right.to_string().contains("Grace"), "{right}");
    }
}
