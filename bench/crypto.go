package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

const (
	// cryptoCipher is the cipher of the ceiling. With TLS 1.3, HAProxy
	// as ober configures it (control/lib/haproxy/render.go) lists
	// TLS_AES_128_GCM_SHA256 first and Go's client prefers it too on
	// machines with AES hardware, so that is what every byte of the
	// throughput figures is encrypted with.
	cryptoCipher = "aes-128-gcm"
	// cryptoBlockBytes is the buffer size of the figure: a full TLS
	// record, which is what bulk transfers are made of.
	cryptoBlockBytes = 16384
	// cryptoSlack is added to the run's own length in its timeout:
	// openssl's start-up and the shortest run's rounding, with room for
	// a loaded machine.
	cryptoSlack = 30 * time.Second
)

// CryptoCeiling measures how fast one core encrypts with the TLS cipher,
// with `openssl speed` over seconds seconds, and scales it to cores cores.
// One process gives the per-core figure: openssl speed is single-threaded
// unless told -multi. The machine figure assumes perfect scaling, which
// overstates it where logical CPUs are SMT siblings sharing one AES unit;
// it is a ceiling, not a prediction. -elapsed divides by wall time, so
// the figure is only right on an otherwise idle machine: run it before
// the load, not beside it.
func CryptoCeiling(ctx context.Context, seconds int, cores int) (Crypto, error) {
	if seconds < 1 {
		return Crypto{}, fmt.Errorf("crypto ceiling: seconds %d, want >= 1", seconds)
	}
	if cores < 1 {
		return Crypto{}, fmt.Errorf("crypto ceiling: cores %d, want >= 1", cores)
	}
	args := []string{"speed", "-elapsed", "-seconds", strconv.Itoa(seconds),
		"-bytes", strconv.Itoa(cryptoBlockBytes), "-evp", cryptoCipher}
	command := "openssl " + strings.Join(args, " ")

	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+cryptoSlack)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", args...)
	// openssl forks nothing, but a stuck pipe must not outlive the
	// context either.
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return Crypto{}, fmt.Errorf("crypto ceiling: %s: %w\n%s%s", command, err, stdout.Bytes(), stderr.Bytes())
	}
	bps, err := parseSpeed(stdout.String(), cryptoCipher, cryptoBlockBytes)
	if err != nil {
		return Crypto{}, fmt.Errorf("crypto ceiling: %s: %w\n%s", command, err, stdout.Bytes())
	}
	perCore := bps / 1e9
	return Crypto{
		Cipher:      cryptoCipher,
		BlockBytes:  cryptoBlockBytes,
		GBpsPerCore: perCore,
		GBpsMachine: perCore * float64(cores),
		Command:     command,
	}, nil
}

// parseSpeed reads the rate of cipher at blockBytes, in bytes per second,
// from the table `openssl speed` prints on stdout:
//
//	The 'numbers' are in 1000s of bytes per second processed.
//	type             16 bytes     64 bytes ...  16384 bytes
//	AES-128-GCM      51334.72k   200735.81k ... 5308137.47k
//
// The header gives the columns, so the same code reads the one-column
// table of -bytes and the full table of older or plainer invocations.
func parseSpeed(out, cipher string, blockBytes int) (float64, error) {
	var sizes []int
	for line := range strings.Lines(out) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if fields[0] == "type" {
			s, err := parseSpeedHeader(fields[1:])
			if err != nil {
				return 0, fmt.Errorf("openssl speed header %q: %w", strings.TrimSpace(line), err)
			}
			sizes = s
			continue
		}
		if sizes == nil || len(fields) <= len(sizes) {
			continue
		}
		// The label is what precedes the numbers; legacy (non-EVP)
		// labels have spaces in them, so it is not just fields[0].
		label := strings.Join(fields[:len(fields)-len(sizes)], " ")
		if !strings.EqualFold(label, cipher) {
			continue
		}
		values := fields[len(fields)-len(sizes):]
		for i, size := range sizes {
			if size != blockBytes {
				continue
			}
			k, ok := strings.CutSuffix(values[i], "k")
			if !ok {
				return 0, fmt.Errorf("openssl speed: %s at %d bytes: %q is not in 1000s of bytes (no k suffix)", label, size, values[i])
			}
			v, err := strconv.ParseFloat(k, 64)
			if err != nil {
				return 0, fmt.Errorf("openssl speed: %s at %d bytes: %w", label, size, err)
			}
			if v <= 0 {
				return 0, fmt.Errorf("openssl speed: %s at %d bytes: rate %q is not positive", label, size, values[i])
			}
			return v * 1000, nil
		}
		return 0, fmt.Errorf("openssl speed: no %d-byte column (columns %v)", blockBytes, sizes)
	}
	if sizes == nil {
		return 0, errors.New("openssl speed: no table (no line starting with \"type\")")
	}
	return 0, fmt.Errorf("openssl speed: no row for %s", cipher)
}

// parseSpeedHeader reads "16 bytes 64 bytes ..." into the column sizes.
func parseSpeedHeader(fields []string) ([]int, error) {
	if len(fields) == 0 || len(fields)%2 != 0 {
		return nil, errors.New("want pairs of <size> bytes")
	}
	sizes := make([]int, 0, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		if fields[i+1] != "bytes" {
			return nil, fmt.Errorf("column %d: %q, want <size> bytes", i/2, fields[i]+" "+fields[i+1])
		}
		n, err := strconv.Atoi(fields[i])
		if err != nil {
			return nil, fmt.Errorf("column %d: %w", i/2, err)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}
