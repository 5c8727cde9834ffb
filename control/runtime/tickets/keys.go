// Package tickets keeps the TLS session ticket keys of a node's HAProxy
// instances: keys derived from a seed the nodes of a site share, one per
// period of time (an epoch), so that every instance of every node
// encrypts and accepts the same tickets without talking to the others.
// It writes the keys file new instances load and pushes each new key
// into the running ones through the runtime API.
package tickets

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"
)

// KeySize is an AES-256 ticket key as HAProxy takes it (tls-ticket-keys,
// "set ssl tls-key"): a 16-byte name, 32 bytes of AES key and 32 of
// HMAC key. HAProxy 2.6 also takes 48-byte (AES-128) keys; the longer
// ones cost nothing that matters.
const KeySize = 80

// Slots is how many keys an HAProxy listener holds (its TLS_TICKETS_NO
// build default): the previous, the current and the next epoch's. The
// middle one encrypts, all three decrypt, so nodes whose clocks differ
// by up to one period accept each other's tickets.
const Slots = 3

// info labels the derivation, so that the seed could serve another
// purpose without giving the same bytes.
const info = "ober tls session ticket key v1"

// Epoch is the number of the period t falls in: whole periods since the
// Unix epoch. Every node computes the same number from its clock.
func Epoch(t time.Time, period time.Duration) int64 {
	p := int64(period / time.Second)
	if p <= 0 {
		p = 1
	}
	u := t.Unix()
	e := u / p
	if u < 0 && u%p != 0 {
		e--
	}
	return e
}

// Start is when epoch begins.
func Start(epoch int64, period time.Duration) time.Time {
	return time.Unix(epoch*int64(period/time.Second), 0)
}

// Derive is the key of epoch: HKDF-SHA256 of the seed, the period and
// the epoch. The same inputs give the same key on every node; a key
// tells nothing of the seed or of another epoch's key.
func Derive(seed []byte, period time.Duration, epoch int64) ([KeySize]byte, error) {
	var k [KeySize]byte
	if len(seed) == 0 {
		return k, fmt.Errorf("ticket key: empty seed")
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(period/time.Second))
	binary.BigEndian.PutUint64(b[8:], uint64(epoch))
	out, err := hkdf.Key(sha256.New, seed, nil, info+string(b[:]), KeySize)
	if err != nil {
		return k, fmt.Errorf("ticket key: %w", err)
	}
	copy(k[:], out)
	return k, nil
}

// Keys are the keys a listener holds during epoch, in HAProxy's order
// (oldest first, the one that encrypts second), base64 as HAProxy reads
// them.
func Keys(seed []byte, period time.Duration, epoch int64) ([]string, error) {
	out := make([]string, 0, Slots)
	for e := epoch - 1; e <= epoch+1; e++ {
		k, err := Derive(seed, period, e)
		if err != nil {
			return nil, err
		}
		out = append(out, base64.StdEncoding.EncodeToString(k[:]))
	}
	return out, nil
}

// File is the tls-ticket-keys file of epoch: Keys, one a line. HAProxy
// encrypts with the penultimate line of the file.
func File(seed []byte, period time.Duration, epoch int64) ([]byte, error) {
	keys, err := Keys(seed, period, epoch)
	if err != nil {
		return nil, err
	}
	var b []byte
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, '\n')
	}
	return b, nil
}
