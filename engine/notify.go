package engine

import (
	"encoding/json"
)

// notify re-emits meter and cap events that a policy notification matches, under the
// notification's name, right after the event (Limitr's notification without fire()).
func (e *Engine) notify(events []Event) []Event {
	if len(e.policy.Notifications) == 0 || len(events) == 0 {
		return events
	}
	out := make([]Event, 0, len(events))
	for _, ev := range events {
		out = append(out, ev)
		if !notifiable(ev.Type) {
			continue
		}
		payload := ev.celMap()
		for _, n := range e.policy.Notifications {
			if n.program.match(ev.Type, payload) {
				re := ev
				re.Notification = ev.Type
				re.Type = n.Name
				out = append(out, re)
			}
		}
	}
	return out
}

func notifiable(t string) bool {
	switch t {
	case EventMeterChanged, EventMeterOverage, EventMeterLimit, EventMeterGoverned, EventMeterReset,
		EventCapLimit, EventCapThresholdCrossed, EventCustomerCapAdded, EventCustomerCapReset, EventCustomerCapRemoved:
		return true
	}
	return false
}

// celMap is the event as CEL sees it: numbers as doubles (CEL has no decimal type;
// matching is a yes/no decision, never stored).
func (ev Event) celMap() map[string]any {
	m := map[string]any{
		"type":        ev.Type,
		"customer":    map[string]any{"id": ev.Customer},
		"entitlement": ev.Entitlement,
		"plan":        ev.Plan,
		"credit":      map[string]any{"name": ev.Credit},
	}
	num := func(k string, d interface{ InexactFloat64() float64 }) { m[k] = d.InexactFloat64() }
	if ev.Remaining != nil {
		num("remaining", ev.Remaining)
	}
	if ev.Overage != nil {
		num("overage", ev.Overage)
	}
	if ev.GrantValueApplied != nil {
		num("grant_value_applied", ev.GrantValueApplied)
	}
	if ev.Meter != nil {
		m["meter"] = map[string]any{
			"old": ev.Meter.Old.InexactFloat64(), "value": ev.Meter.Value.InexactFloat64(),
			"limit": ev.Meter.Limit.InexactFloat64(), "diff": ev.Meter.Diff.InexactFloat64(),
			"overhead": ev.Meter.Overhead.InexactFloat64(),
		}
	}
	if ev.Cap != nil {
		m["cap"] = map[string]any{"id": ev.Cap.ID, "credit": ev.Cap.Credit,
			"value": ev.Cap.Value.InexactFloat64(), "meter_value": ev.Cap.MeterValue.InexactFloat64()}
	}
	if ev.EventData != "" {
		var data map[string]any
		if json.Unmarshal([]byte(ev.EventData), &data) == nil {
			m["event_data"] = data
		}
	}
	return m
}
