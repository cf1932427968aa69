package edgeward

import (
	"errors"
	"os"
	"sort"
	"strings"
	"unsafe"
)

// The registered handlers; nil = not registered.
var handlers struct {
	init     func() error
	tick     func(nowNs int64) error
	message  func(Message) error
	snapshot func() []byte
	restore  func(state []byte) error
	health   func() error
}

// registering fails loudly on a nil handler or a second registration.
func registering(name string, isNil, taken bool) {
	if isNil {
		panic("edgeward." + name + "(nil)")
	}
	if taken {
		panic("edgeward." + name + " called twice")
	}
}

// OnInit registers the handler run once at start, before the module counts
// as running (after the package init functions, with the args and env
// available). An error refuses to start: it is logged, and the supervisor
// reports "ew_init returned N" and applies the restart policy.
func OnInit(f func() error) {
	registering("OnInit", f == nil, handlers.init != nil)
	handlers.init = f
}

// OnTick registers the handler run every [schedule] tick_us of the policy,
// with NowNs(). Missed periods are folded into one call.
func OnTick(f func(nowNs int64) error) {
	registering("OnTick", f == nil, handlers.tick != nil)
	handlers.tick = f
}

// OnMessage registers the handler of the messages of the channels the
// policy subscribes the module to. m.Bytes is valid only during the call.
func OnMessage(f func(m Message) error) {
	registering("OnMessage", f == nil, handlers.message != nil)
	handlers.message = f
}

// OnSnapshot registers the function that returns the state to save, or nil
// for "nothing to save". It is called every [snapshot] interval_ms, when
// edgeward stops, and around reloads and upgrades; at most 16 MiB.
func OnSnapshot(f func() []byte) {
	registering("OnSnapshot", f == nil, handlers.snapshot != nil)
	handlers.snapshot = f
}

// OnRestore registers the function given the newest durable snapshot taken
// by this same wasm, once at start after OnInit's handler. The bytes are
// valid only during the call. An error starts the module from its initial
// state (logged).
func OnRestore(f func(state []byte) error) {
	registering("OnRestore", f == nil, handlers.restore != nil)
	handlers.restore = f
}

// OnHealth registers the health check asked at the end of an upgrade's
// probation: nil is healthy, an error (logged) rolls the upgrade back.
// Without it the module is healthy.
func OnHealth(f func() error) {
	registering("OnHealth", f == nil, handlers.health != nil)
	handlers.health = f
}

// modules maps the names given to Module to their setup functions.
var modules map[string]func()

// Module registers one module of a multi-module wasm: several modules of
// one vendor built into one wasm, so that their workers share its code
// instead of each mapping a copy of the Go runtime (see "One wasm, many
// Go modules" in docs/guest-abi.md). setup registers that module's
// handlers (OnTick, OnMessage, ...) and runs only in the worker whose
// module is name, the policy file's stem (os.Args[0]), at ew_init. Call
// Module from a package's init function:
//
//	func init() { edgeward.Module("temp-alert", setup) }
//
// A wasm registers its handlers either all through Module or all
// directly, not both.
func Module(name string, setup func()) {
	registering("Module", setup == nil, modules[name] != nil)
	if modules == nil {
		modules = map[string]func(){}
	}
	modules[name] = setup
}

// setUpModule runs the setup Module registered for this worker's module,
// or says why none can run.
func setUpModule() bool {
	h := &handlers
	direct := h.init != nil || h.tick != nil || h.message != nil || h.snapshot != nil ||
		h.restore != nil || h.health != nil
	if direct {
		Log(LevelError, "edgeward: handlers registered both directly and through edgeward.Module: register every module's handlers in its Module setup")
		return false
	}
	name := ""
	if len(os.Args) > 0 {
		name = os.Args[0]
	}
	setup, ok := modules[name]
	if !ok {
		names := make([]string, 0, len(modules))
		for n := range modules {
			names = append(names, n)
		}
		sort.Strings(names)
		Log(LevelError, "edgeward: this wasm holds the modules "+strings.Join(names, ", ")+
			"; none is named \""+name+"\" (the policy file's stem): name the policy after one of them")
		return false
	}
	setup()
	return true
}

// noHandlers is logged by ew_init when no handler is registered: usually
// they were registered in main, which a reactor never runs.
const noHandlers = "edgeward: no handlers registered (call edgeward.OnTick/OnMessage/... in init(); main() never runs in a -buildmode=c-shared module)"

// code turns a handler's error into the export's return value: 0, the
// code of the edgeward.Error it wraps, or 1.
func code(err error) int32 {
	if err == nil {
		return 0
	}
	// Unwrap by hand: errors.As would add 55 KB of reflection.
	for e := err; e != nil; e = errors.Unwrap(e) {
		if c, ok := e.(Error); ok && c != 0 {
			return int32(c)
		}
	}
	return 1
}

// lastErrors holds the last error text logged per export, so a handler
// failing the same way at every call is logged once.
var lastErrors = map[string]string{}

// failed logs a handler's error unless the previous call of that export
// failed the same way, and returns the export's code.
func failed(export string, err error) int32 {
	if err == nil {
		if len(lastErrors) > 0 {
			delete(lastErrors, export)
		}
		return 0
	}
	if text := err.Error(); lastErrors[export] != text {
		lastErrors[export] = text
		Log(LevelWarn, export+": "+text)
	}
	return code(err)
}

//go:wasmexport ew_init
func ewInit() int32 {
	h := &handlers
	if len(modules) > 0 && !setUpModule() {
		return 1
	}
	if h.init == nil && h.tick == nil && h.message == nil && h.snapshot == nil &&
		h.restore == nil && h.health == nil {
		Log(LevelError, noHandlers)
		return 1
	}
	if h.init == nil {
		return 0
	}
	if err := h.init(); err != nil {
		Log(LevelError, "ew_init: "+err.Error())
		return code(err)
	}
	return 0
}

//go:wasmexport ew_on_tick
func ewOnTick(nowNs int64) int32 {
	if handlers.tick == nil {
		return 0
	}
	return failed("ew_on_tick", handlers.tick(nowNs))
}

// buffers holds every buffer ew_alloc gave the host, so that the garbage
// collector never frees one (it never moves heap objects).
var buffers [][]byte

//go:wasmexport ew_alloc
func ewAlloc(n int32) *byte {
	buffer := make([]byte, max(n, 1))
	buffers = append(buffers, buffer)
	return &buffer[0]
}

// buffer finds the n bytes at address ptr in a buffer from ew_alloc.
func buffer(ptr, n int32) (b []byte, index int) {
	for i, b := range buffers {
		start := int64(uintptr(unsafe.Pointer(&b[0])))
		at := int64(uint32(ptr)) - start
		if at >= 0 && n >= 0 && at+int64(n) <= int64(len(b)) {
			return b[at : at+int64(n) : at+int64(n)], i
		}
	}
	return nil, -1
}

//go:wasmexport ew_on_message
func ewOnMessage(ch, ptr, n int32) int32 {
	bytes, index := buffer(ptr, n)
	if index < 0 {
		Log(LevelError, "ew_on_message: the message is not in a buffer from ew_alloc")
		return int32(ErrInvalid)
	}
	if handlers.message == nil {
		return failed("ew_on_message", errNoMessageHandler)
	}
	m := Message{Channel: Channel(ch), Bytes: bytes, Seq: sysMessageSeq()}
	return failed("ew_on_message", handlers.message(m))
}

type handlerMissing string

func (e handlerMissing) Error() string { return string(e) }

var errNoMessageHandler = handlerMissing("edgeward: a message arrived but no OnMessage handler is registered (register it in init())")

//go:wasmexport ew_snapshot
func ewSnapshot() int32 {
	if handlers.snapshot == nil {
		return 1
	}
	state := handlers.snapshot()
	if state == nil {
		return 1
	}
	var first *byte
	if len(state) > 0 {
		first = &state[0]
	}
	return sysSnapshotPut(first, int32(len(state)))
}

//go:wasmexport ew_restore
func ewRestore(ptr, n int32) int32 {
	state, index := buffer(ptr, n)
	if index < 0 {
		Log(LevelError, "ew_restore: the state is not in a buffer from ew_alloc")
		return int32(ErrInvalid)
	}
	// The host wrote the state there for this call only: the buffer can go.
	defer func() { buffers = append(buffers[:index], buffers[index+1:]...) }()
	if handlers.restore == nil {
		Log(LevelWarn, "edgeward: a snapshot was restored but no OnRestore handler is registered")
		return int32(ErrUnsupported)
	}
	if err := handlers.restore(state); err != nil {
		Log(LevelWarn, "ew_restore: "+err.Error())
		return code(err)
	}
	return 0
}

//go:wasmexport ew_health
func ewHealth() int32 {
	if handlers.health == nil {
		return 0
	}
	if err := handlers.health(); err != nil {
		Log(LevelWarn, "ew_health: "+err.Error())
		return code(err)
	}
	return 0
}
