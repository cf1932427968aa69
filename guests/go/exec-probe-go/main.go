// An ordinary Go program for wasip1, no edgeward SDK: what a vendor's
// existing tool looks like. The exec test runs it under `edgeward exec` to
// show that plain Go programs run there as under `wasmtime run`: args,
// env, stdin, stdout, stderr, files in a granted dir, timers, goroutines
// and the exit code.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	fmt.Printf("go args: %q\n", os.Args[1:])
	fmt.Printf("go env: GREETING=%q\n", os.Getenv("GREETING"))
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Printf("go stdin: %s\n", strings.TrimSpace(line))
	fmt.Fprintln(os.Stderr, "go stderr: hello")

	// A goroutine and a ticker, as a Go program has them.
	done := make(chan int)
	go func() {
		ticker := time.NewTicker(5 * time.Millisecond)
		defer ticker.Stop()
		n := 0
		for range ticker.C {
			n++
			if n == 3 {
				done <- n
				return
			}
		}
	}()
	fmt.Printf("go ticks: %d\n", <-done)

	if err := os.WriteFile("/out/from-go.txt", []byte("written by Go"), 0o644); err != nil {
		fmt.Printf("go write: denied (%v)\n", err)
	} else {
		fmt.Println("go write: ok")
	}
	if _, err := os.ReadFile("/etc/passwd"); err != nil {
		fmt.Println("go read /etc/passwd: denied")
	} else {
		fmt.Println("go read /etc/passwd: ok")
	}
	os.Exit(42)
}
