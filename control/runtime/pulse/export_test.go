package pulse

// Stepped makes the checkers p starts from now on wait for Step instead
// of their interval.
func Stepped(p *Pulse) {
	p.mu.Lock()
	p.stepped = true
	p.mu.Unlock()
}

// Step runs one check of key and returns once its result is recorded;
// false if key has no running checker.
func Step(p *Pulse, key string) bool {
	p.mu.Lock()
	var c *checker
	if tg := p.targets[key]; tg != nil {
		c = tg.checker
	}
	p.mu.Unlock()
	if c == nil || c.step == nil {
		return false
	}
	ack := make(chan struct{})
	select {
	case c.step <- ack:
	case <-c.ctx.Done():
		return false
	}
	<-ack
	return true
}

// Live is the number of checker goroutines running.
func Live(p *Pulse) int { return int(p.live.Load()) }
