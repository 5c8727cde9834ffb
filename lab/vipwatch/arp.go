package vipwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ARPConfig says what an ARPObserver asks and whom it expects to answer.
//
// The observer speaks ARP only: the VIPs it watches are IPv4. The VRRP
// sites it was written for (internal/testsite/vrrptest, the lab) have IPv4 VIPs
// only, and a VRRP instance's VIPs are of one family; an IPv6 site would
// need the same with neighbour solicitations.
type ARPConfig struct {
	// Iface is the observer's interface on the nodes' segment, in the
	// namespace given to StartARP.
	Iface string
	// VIPs are the addresses asked for, each once per period.
	VIPs []netip.Addr
	// Nodes maps each node's name to the MAC of its interface on the
	// segment, to name the hosts that answer.
	Nodes map[string]net.HardwareAddr
	// Every is the period; default 5 ms.
	Every time.Duration
	// Window is how long after a request an answer still counts as
	// describing the moment of the request; default 20 ms.
	Window time.Duration
}

// ARPObserver asks, every period, who has each VIP, and records for every
// request which hosts answered it.
//
// Unlike Sampler, which reads the nodes one after the other, this is an
// atomic observation: one broadcast frame reaches every node at once, and
// each node answers it from its own state at that moment. Two hosts
// answering one request both held the VIP then, as far as the network
// could tell; a client asking at that moment could have been sent to
// either.
type ARPObserver struct {
	cfg  ARPConfig
	fd   int
	src  net.HardwareAddr
	dst  unix.SockaddrLinklayer
	mu   sync.Mutex
	book *book
	seq  uint32
	err  error
	// quiet stops the requests; stop, one window later, the reader.
	quiet, stop       chan struct{}
	asked, readerDone chan struct{}
	once              sync.Once
}

// StartARP opens a packet socket on cfg.Iface inside ns and starts asking.
// The socket stays in ns whichever thread uses it later.
func StartARP(ns netns.NsHandle, cfg ARPConfig) (*ARPObserver, error) {
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Millisecond
	}
	if cfg.Window <= 0 {
		cfg.Window = 20 * time.Millisecond
	}
	for _, v := range cfg.VIPs {
		if !v.Is4() {
			return nil, fmt.Errorf("ARP observer: %s is not IPv4", v)
		}
	}
	// A random first sequence number keeps two observers on one segment
	// from taking each other's answers for their own.
	o := &ARPObserver{cfg: cfg, fd: -1, book: newBook(cfg.Window, cfg.Nodes), seq: rand.Uint32(),
		quiet: make(chan struct{}), stop: make(chan struct{}), asked: make(chan struct{}), readerDone: make(chan struct{})}
	if err := inNamespace(ns, o.open); err != nil {
		return nil, fmt.Errorf("ARP observer on %s: %w", cfg.Iface, err)
	}
	go o.receive()
	go o.ask()
	return o, nil
}

// inNamespace runs fn on a thread that entered ns. The thread is thrown
// away afterwards rather than trusted to switch back.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// htons turns a 16-bit value into network order as the kernel reads it
// from a native integer.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// open makes the packet socket, bound to the interface, for ARP frames.
func (o *ARPObserver) open() error {
	ifi, err := net.InterfaceByName(o.cfg.Iface)
	if err != nil {
		return err
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("%s has no Ethernet address", o.cfg.Iface)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	if err := o.setup(fd, ifi.Index); err != nil {
		unix.Close(fd)
		return err
	}
	o.fd, o.src = fd, ifi.HardwareAddr
	o.dst = unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	return nil
}

// setup binds fd to the interface and lets it see the answers: they go
// to the tag MACs, not to the interface's address, so the interface is
// put in promiscuous mode for as long as the socket lives. A receive
// timeout lets the reader notice Stop.
func (o *ARPObserver) setup(fd, ifindex int) error {
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind packet socket: %w", err)
	}
	mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fmt.Errorf("promiscuous mode: %w", err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("receive timeout: %w", err)
	}
	return nil
}

// ask sends one request per VIP every period until Stop.
func (o *ARPObserver) ask() {
	defer close(o.asked)
	tick := time.NewTicker(o.cfg.Every)
	defer tick.Stop()
	for {
		for _, v := range o.cfg.VIPs {
			o.askOnce(v)
		}
		select {
		case <-o.quiet:
			return
		case <-tick.C:
		}
	}
}

// askOnce books a request before sending it, so that no answer can
// arrive before its request is known.
func (o *ARPObserver) askOnce(vip netip.Addr) {
	o.mu.Lock()
	o.seq++
	seq := o.seq
	o.book.sent(seq, vip, time.Now())
	o.mu.Unlock()
	f, err := arpRequest(o.src, seq, vip)
	if err == nil {
		err = unix.Sendto(o.fd, f, 0, &o.dst)
	}
	if err != nil {
		o.fail(fmt.Errorf("ask who has %s: %w", vip, err))
	}
}

// receive files every answer until Stop.
func (o *ARPObserver) receive() {
	defer close(o.readerDone)
	buf := make([]byte, 1500)
	for {
		select {
		case <-o.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(o.fd, buf, 0)
		at := time.Now()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			o.fail(fmt.Errorf("read: %w", err))
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		a, err := parseARPAnswer(buf[:n])
		if err != nil {
			continue // other ARP traffic on the segment
		}
		o.mu.Lock()
		o.book.answered(a, at)
		o.mu.Unlock()
	}
}

func (o *ARPObserver) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

// Stop ends the requests, waits one window for the last answers and
// closes the socket; it may be called more than once.
func (o *ARPObserver) Stop() {
	o.once.Do(func() {
		close(o.quiet)
		<-o.asked
		time.Sleep(o.cfg.Window)
		close(o.stop)
		<-o.readerDone
		unix.Close(o.fd)
	})
}

// Err is the first failure to send or read, if any.
func (o *ARPObserver) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Summary counts the requests so far, their answers and the doubles.
func (o *ARPObserver) Summary() ARPSummary {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.book.summary()
}

// Probes returns every request so far with its answers.
func (o *ARPObserver) Probes() []Probe {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.book.copyProbes()
}
