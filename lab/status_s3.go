package lab

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/ober-ingress/ober/lab/cephlab"
)

// S3Report is the S3 backend's storage: Ceph's health, the OSD's space,
// and what the S3 user stored against its quota.
type S3Report struct {
	Health cephlab.Health
	Usage  cephlab.Usage
	// Stored is the S3 user's bytes (radosgw-admin user stats), -1 when
	// unknown.
	Stored int64
	Quota  int64
	// Unread says what could not be asked, and why.
	Unread []string
}

// fullShare of the quota stored counts as full: the quota's statistics
// are cached for a few seconds, so an upload ends a little short of it.
const fullShare = 0.97

// s3Report asks Ceph and RGW. When the S3 backend is full it is named
// first among the problems, as it is then the cause of the others: the
// gateways stop taking uploads, the nodes' checks may fail, and the nodes
// withdraw.
func (r *Report) s3Report(ctx context.Context) {
	st := r.State
	if st.Ceph == "" {
		return
	}
	s := &S3Report{Stored: -1, Quota: st.S3.Quota}
	r.S3 = s
	conf := filepath.Join(st.Dir, "ceph", "ceph.conf")
	var err error
	if s.Health, err = cephlab.HealthOf(ctx, conf, st.Ceph); err != nil {
		s.Unread = append(s.Unread, "health: "+err.Error())
	}
	if s.Usage, err = cephlab.UsageOf(ctx, filepath.Join(st.Dir, "ceph")); err != nil {
		s.Unread = append(s.Unread, "the OSD's space: "+err.Error())
	}
	if len(st.Backends) > 0 && st.Backends[0].Gateway != "" {
		b := st.Backends[0]
		if s.Stored, err = cephlab.UserStored(ctx, conf, b.NS, b.Gateway, "lab"); err != nil {
			s.Unread = append(s.Unread, "the S3 user's stats: "+err.Error())
		}
	}
	var full []string
	if s.Health.Full {
		full = append(full, "Ceph reports "+strings.Join(s.Health.Checks, "; "))
	}
	if s.Quota > 0 && s.Stored >= int64(float64(s.Quota)*fullShare) {
		full = append(full, fmt.Sprintf("the S3 user stored %s of its %s quota, so uploads are refused with 403 QuotaExceeded", gib(s.Stored), gib(s.Quota)))
	}
	if len(full) > 0 {
		r.Problems = append([]string{"the S3 backend is full or nearly: " + strings.Join(full, "; ") +
			": delete objects (RGW frees their space half a minute later), or make a lab with a larger --s3-capacity"}, r.Problems...)
	} else if s.Health.Status != "" && s.Health.Status != "HEALTH_OK" {
		r.Problems = append(r.Problems, "Ceph is "+s.Health.Status+": "+strings.Join(s.Health.Checks, "; "))
	}
	for _, u := range s.Unread {
		r.Problems = append(r.Problems, "S3 backend: cannot read "+u)
	}
}

// print writes the S3 backend's part of the report.
func (s *S3Report) print(w io.Writer, st *State) {
	fmt.Fprintf(w, "\nS3 backend (Ceph, %s):\n", onOff(s.Health.Status != "", s.Health.Status, "health unknown"))
	if s.Usage.Total > 0 {
		fmt.Fprintf(w, "  OSD: %s of %s used, in %s\n", gib(s.Usage.Used), gib(s.Usage.Total), st.S3.BlockFile)
	}
	if s.Stored >= 0 {
		fmt.Fprintf(w, "  S3 user: %s stored of its %s quota\n", gib(s.Stored), gib(s.Quota))
	}
	for _, c := range s.Health.Checks {
		fmt.Fprintf(w, "  %s\n", c)
	}
}
