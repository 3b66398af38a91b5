package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// EncodeCustomer returns the canonical encoding of one customer: JSON with struct
// fields in declaration order, map keys sorted and decimals as strings, so equal
// state always encodes to equal bytes (the basis of snapshots and state hashes).
func (e *Engine) EncodeCustomer(id string) ([]byte, error) {
	c := e.customers[id]
	if c == nil {
		return nil, notFound("customer", id)
	}
	return json.Marshal(c)
}

// RestoreCustomer installs a customer from its canonical encoding, replacing any
// customer with the same id. Unknown fields are an error: a snapshot from a newer
// format must not be half-read.
func (e *Engine) RestoreCustomer(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Customer
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("decode customer: %w", err)
	}
	if err := validID("id", c.ID); err != nil {
		return fmt.Errorf("decode customer: %w", err)
	}
	if old := e.customers[c.ID]; old != nil {
		for _, a := range old.AltIDs {
			delete(e.alts, a)
		}
	}
	e.customers[c.ID] = &c
	for _, a := range c.AltIDs {
		e.alts[a] = c.ID
	}
	return nil
}

// Clear removes every customer (before a snapshot restore).
func (e *Engine) Clear() {
	e.customers = map[string]*Customer{}
	e.alts = map[string]string{}
}
