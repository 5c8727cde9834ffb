package plan

import (
	"fmt"

	"github.com/ober-ingress/ober/loader"
)

// ListenerKey is what a listener serves. A plan keeps the ID of a
// listener whose key the running plan has, and never gives a new key an
// ID the running plan uses: between the sockmap swap and the service
// table switch, an old service's connections must not reach another
// service's sockets.
type ListenerKey struct {
	Service string
	Mode    string
	Port    uint16
	Family  int
}

// listenerIDs hands out IDs: prev's for keys it had, else the lowest ID
// neither prev nor this plan uses.
type listenerIDs struct {
	prev map[ListenerKey]uint32
	used map[uint32]bool
	got  map[ListenerKey]uint32
}

func newListenerIDs(prev map[ListenerKey]uint32) *listenerIDs {
	l := &listenerIDs{prev: prev, used: map[uint32]bool{}, got: map[ListenerKey]uint32{}}
	for _, id := range prev {
		l.used[id] = true
	}
	return l
}

func (l *listenerIDs) id(k ListenerKey) (uint32, error) {
	if id, ok := l.got[k]; ok {
		return id, nil
	}
	id, ok := l.prev[k]
	if !ok {
		for id = 0; l.used[id]; id++ {
		}
		if id >= loader.MaxListeners {
			return 0, fmt.Errorf("services: more than %d listeners (service x address family, counting the running configuration's)", loader.MaxListeners)
		}
	}
	l.used[id] = true
	l.got[k] = id
	return id, nil
}
