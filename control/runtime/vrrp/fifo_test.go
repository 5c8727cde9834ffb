package vrrp

import "testing"

func TestParseFIFOLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Event
	}{
		{`INSTANCE "ober_51" MASTER 200`, Event{"INSTANCE", "ober_51", "MASTER", 200}},
		{`INSTANCE "ober_51" BACKUP 190`, Event{"INSTANCE", "ober_51", "BACKUP", 190}},
		{`INSTANCE "ober_51" FAULT 0`, Event{"INSTANCE", "ober_51", "FAULT", 0}},
		{`INSTANCE "ober_51" STOP 200`, Event{"INSTANCE", "ober_51", "STOP", 200}},
		{`INSTANCE "ober_51" DELETED 200`, Event{"INSTANCE", "ober_51", "DELETED", 200}},
		{`INSTANCE "ober_51" MASTER_RX_LOWER_PRI 200`, Event{"INSTANCE", "ober_51", "MASTER_RX_LOWER_PRI", 200}},
		{`GROUP "g1" MASTER`, Event{"GROUP", "g1", "MASTER", -1}},
	} {
		got, err := ParseFIFOLine(tc.line)
		if err != nil || got != tc.want {
			t.Errorf("ParseFIFOLine(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		``,
		`INSTANCE`,
		`VS [10.0.0.1]:tcp:80 UP`,
		`INSTANCE ober_51 MASTER 200`,
		`INSTANCE "ober_51 MASTER 200`,
		`INSTANCE "" MASTER 200`,
		`INSTANCE "ober_51"`,
		`INSTANCE "ober_51"MASTER 200`,
		`INSTANCE "ober_51" SLEEPING 200`,
		`INSTANCE "ober_51" MASTER high`,
		`INSTANCE "ober_51" MASTER 300`,
		`INSTANCE "ober_51" MASTER 200 extra`,
	} {
		if ev, err := ParseFIFOLine(bad); err == nil {
			t.Errorf("ParseFIFOLine(%q) = %+v, want an error", bad, ev)
		}
	}
}
