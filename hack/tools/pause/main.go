// pause: the pod sandbox's first process for the test node. It holds the pod's namespaces
// open, reaps the zombies it inherits as PID 1, and exits 0 on SIGINT or SIGTERM.
// Built static (CGO_ENABLED=0) and imported as an image by hack/testenv, since no image
// registry can be pulled from here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
