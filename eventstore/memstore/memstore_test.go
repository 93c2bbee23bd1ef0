package memstore_test

import (
	"testing"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/memstore"
	"stele.dev/stele/eventstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store { return memstore.New(nil) })
}
