package engine

import (
	"encoding/json"
	"fmt"

	"github.com/shopspring/decimal"
)

// Customer is one customer's state. Slices keep insertion order (caps, grants, holds),
// which is the order they are evaluated in; maps are only read by key or in sorted
// key order.
type Customer struct {
	ID        string            `json:"id"`
	Plan      string            `json:"plan"` // "" = inherit through refs, then the default plan
	Type      string            `json:"type"`
	Label     string            `json:"label"`
	AltIDs    []string          `json:"alt_ids,omitempty"`
	Refs      []string          `json:"refs,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Meters    map[string]*Meter `json:"meters,omitempty"`    // entitlement -> meter
	Overrides map[string]*Limit `json:"overrides,omitempty"` // entitlement -> limit
	Grants    []*Grant          `json:"grants,omitempty"`
	Caps      []*Cap            `json:"caps,omitempty"`
	Created   int64             `json:"created"`
	// Seq numbers generated ids (cap-N, grant-N, hold-N) so every replica generates
	// the same ones.
	Seq uint64 `json:"seq"`
}

func (c *Customer) nextID(prefix string) string {
	c.Seq++
	return fmt.Sprintf("%s-%d", prefix, c.Seq)
}

// Meter is a customer's usage of one entitlement in the current period.
type Meter struct {
	Credit        string           `json:"credit"`
	Started       int64            `json:"started"`
	Value         decimal.Decimal  `json:"value"`
	Overhead      decimal.Decimal  `json:"overhead"`
	Holds         []Hold           `json:"holds,omitempty"`
	History       []HistoryEntry   `json:"history,omitempty"` // last 3 movements, oldest first
	EWMARate      decimal.Decimal  `json:"ewma_rate"`
	GovTokens     *decimal.Decimal `json:"governor_tokens,omitempty"`
	GovLastRefill int64            `json:"governor_last_refill,omitempty"`
	// Estimates learn what calls on this meter use, by segment ("all" when none).
	Estimates map[string]*Estimate `json:"estimates,omitempty"`
}

// HistoryEntry is one metered movement, for rate and acceleration.
type HistoryEntry struct {
	TS    int64           `json:"ts"`
	Delta decimal.Decimal `json:"delta"`
}

// Hold is room reserved on a meter until settled, released or expired.
type Hold struct {
	ID       string          `json:"id"`
	Value    decimal.Decimal `json:"value"`
	Overhead decimal.Decimal `json:"overhead"`
	Expires  int64           `json:"expires"`
}

// Grant is a balance of a credit that covers overage before it is billed.
type Grant struct {
	ID          string           `json:"id"`
	Credit      string           `json:"credit"`
	Topup       string           `json:"topup,omitempty"`
	Created     int64            `json:"created_on"`
	Starting    decimal.Decimal  `json:"starting_value"`
	Value       decimal.Decimal  `json:"value"`
	ExpiresOn   int64            `json:"expires_on,omitempty"` // 0 = never
	Period      Period           `json:"period"`
	Started     int64            `json:"started"` // start of the current reset period
	ResetMode   string           `json:"reset_mode,omitempty"`
	RolloverMin *decimal.Decimal `json:"rollover_min,omitempty"`
	RolloverMax *decimal.Decimal `json:"rollover_max,omitempty"`
	RolloverPct *decimal.Decimal `json:"rollover_pct,omitempty"`
	MaxBalance  *decimal.Decimal `json:"max_balance,omitempty"`
	CatchupCap  int64            `json:"reset_catchup_cap,omitempty"`
}

// Cap is a spend ceiling across calls, credits and entitlements.
type Cap struct {
	ID               string          `json:"id"`
	Credit           string          `json:"credit"`
	Value            decimal.Decimal `json:"value"`
	MeterValue       decimal.Decimal `json:"meter_value"`
	Exchangeable     bool            `json:"exchangeable"`
	OverageOnly      bool            `json:"overage_only,omitempty"`
	IgnoreGrants     bool            `json:"ignore_grants,omitempty"`
	ObserveOnly      bool            `json:"observe_only,omitempty"`
	OverheadCost     bool            `json:"overhead_cost,omitempty"`
	FollowDecrements bool            `json:"follow_decrements,omitempty"`
	HardTrailing     bool            `json:"hard_trailing,omitempty"`
	Shared           bool            `json:"shared,omitempty"`
	SharedWith       []string        `json:"shared_with,omitempty"`
	Scope            []string        `json:"scope,omitempty"`
	Period           Period          `json:"period"`
	Created          int64           `json:"created_on"`
	Started          int64           `json:"started"`
	ExpiresOn        int64           `json:"expires_on,omitempty"`
}

func (c *Cap) appliesTo(entitlement string) bool {
	if c.Scope == nil {
		return true
	}
	for _, s := range c.Scope {
		if s == entitlement {
			return true
		}
	}
	return false
}

// current returns the cap's meter value as of now (zero after a pending reset) and
// whether it has expired.
func (c *Cap) current(now int64) (decimal.Decimal, bool) {
	if c.ExpiresOn != 0 && c.ExpiresOn < now {
		return decimal.Zero, true
	}
	if _, _, reset := c.Period.Advance(c.Started, now); reset {
		return decimal.Zero, false
	}
	return c.MeterValue, false
}

// periodJSON is Period's stable encoding: the schedule text, not its parsed form.
type periodJSON struct {
	Inc int64  `json:"inc,omitempty"`
	Sch string `json:"sch,omitempty"`
}

// MarshalJSON encodes a period as {inc} or {sch}.
func (p Period) MarshalJSON() ([]byte, error) {
	pj := periodJSON{Inc: p.Inc}
	if p.Sch != nil {
		pj.Sch = p.Sch.String()
	}
	return json.Marshal(pj)
}

// UnmarshalJSON decodes and re-parses a period.
func (p *Period) UnmarshalJSON(b []byte) error {
	var pj periodJSON
	if err := json.Unmarshal(b, &pj); err != nil {
		return err
	}
	*p = Period{Inc: pj.Inc}
	if pj.Sch != "" {
		s, err := ParseSchedule(pj.Sch)
		if err != nil {
			return err
		}
		p.Sch = &s
	}
	return nil
}

// ResetSch returns the schedule text, or "".
func (p Period) ResetSch() string {
	if p.Sch == nil {
		return ""
	}
	return p.Sch.String()
}

func cloneDec(d *decimal.Decimal) *decimal.Decimal {
	if d == nil {
		return nil
	}
	v := *d
	return &v
}
