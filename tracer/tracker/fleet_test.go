package tracker

import "testing"

// Metrics count episodes, not their repeats: exactly one narrative of each
// stalled or keepalive_probing episode begins it.
func TestEpisodeBeginsOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		verdict Verdict
	}{
		{"cable-replug", Stalled},
		{"cable-pull", Stalled},
		{"keepalive-dead", KeepaliveProbing},
		{"keepalive-dead-v6", KeepaliveProbing},
	} {
		rec := loadRecording(t, tc.name)
		seen, begins := 0, 0
		for _, ns := range replay(t, rec, Config{}) {
			for _, n := range ns {
				if n.Verdict == tc.verdict {
					seen++
					if n.Begins {
						begins++
					}
				} else if n.Begins {
					t.Errorf("%s: %s begins an episode", tc.name, n.Verdict)
				}
			}
		}
		if seen == 0 || begins != 1 {
			t.Errorf("%s: %d %s narratives, %d begin an episode; want 1", tc.name, seen, tc.verdict, begins)
		}
	}
}

// The socket's cgroup id reaches its narratives.
func TestNarrativeCarriesCgroupID(t *testing.T) {
	rec := loadRecording(t, "connect-refused")
	for i := range rec.events {
		rec.events[i].CgroupID = 4242
	}
	n := 0
	for _, ns := range replay(t, rec, Config{}) {
		for _, nar := range ns {
			n++
			if nar.CgroupID != 4242 {
				t.Errorf("%s: cgroup id %d", nar.Verdict, nar.CgroupID)
			}
		}
	}
	if n == 0 {
		t.Fatal("no narrative")
	}
}
