package main

import (
	"fmt"
	"strings"
	"time"
)

// The API's shapes, as the client commands print them (only the fields
// they print).

// envView is an environment.
type envView struct {
	Project         string `json:"project"`
	ID              string `json:"id"`
	Name            string `json:"name"`
	Production      bool   `json:"production"`
	RotationSeconds int64  `json:"rotation_seconds"`
	Approval        struct {
		Reveal    bool `json:"reveal"`
		Change    bool `json:"change"`
		Approvers int  `json:"approvers"`
	} `json:"approval"`
}

// approvals says what the environment's approval policy covers, and how
// many approvers it wants ("-" for none).
func (e envView) approvals() string {
	var ap []string
	if e.Approval.Reveal {
		ap = append(ap, "reveal")
	}
	if e.Approval.Change {
		ap = append(ap, "change")
	}
	if len(ap) == 0 {
		return "-"
	}
	return fmt.Sprintf("%s (%d)", strings.Join(ap, ", "), max(1, e.Approval.Approvers))
}

// rotation is the environment's key rotation interval.
func (e envView) rotation() time.Duration { return time.Duration(e.RotationSeconds) * time.Second }

// keysetView is an environment's keyset.
type keysetView struct {
	Project      string     `json:"project"`
	Env          string     `json:"env"`
	PrimaryKey   int64      `json:"primary_key"`
	PrimarySince time.Time  `json:"primary_since"`
	LastRotation *time.Time `json:"last_rotation"`
	RotationDue  bool       `json:"rotation_due"`
	Reseal       struct {
		Complete bool  `json:"complete"`
		Pending  int64 `json:"pending"`
	} `json:"reseal"`
	Keys []struct {
		ID      int64     `json:"id"`
		State   string    `json:"state"`
		Primary bool      `json:"primary"`
		AddedAt time.Time `json:"added_at"`
	} `json:"keys"`
}
