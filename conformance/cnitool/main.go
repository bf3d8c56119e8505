// cnitool: a minimal CNI runtime driver with the interface of the upstream
// cnitool, built against the libcni shipped by Debian (1.1.2) in GOPATH mode.
//
// Usage:
//
//	cnitool add|check|del NETNAME NETNS_PATH
//
// Environment:
//
//	NETCONFPATH    directory holding *.conflist / *.conf / *.json (default /etc/cni/net.d)
//	CNI_PATH       plugin search path, colon separated
//	CNI_ARGS       "K1=V1;K2=V2" passed to plugins as CNI_ARGS
//	CAP_ARGS       JSON object of capability args (runtimeConfig)
//	CNI_IFNAME     interface name inside the container (default eth0)
//	CNI_CACHE_DIR  libcni result cache dir (default: libcni's /var/lib/cni)
//	CNI_CONTAINERID  extension: override the derived container id (e.g. to
//	               DEL an attachment made by `ctr run -d --cni`, whose id is
//	               "<namespace>-<container>"); NETNS_PATH may then be "" for del,
//	               which passes an empty CNI_NETNS as ctr does.
//
// libcni 1.1.2 has no GCNetworkList / GetStatusNetworkList (added in libcni
// 1.2 for CNI spec 1.1), so the gc and status verbs are not provided.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

const (
	envNetConfPath = "NETCONFPATH"
	envCNIPath     = "CNI_PATH"
	envCNIArgs     = "CNI_ARGS"
	envCapArgs     = "CAP_ARGS"
	envIfName      = "CNI_IFNAME"
	envCacheDir    = "CNI_CACHE_DIR"
	envContainerID = "CNI_CONTAINERID"

	defaultNetConfPath = "/etc/cni/net.d"
	defaultIfName      = "eth0"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "cnitool: "+format+"\n", a...)
	os.Exit(1)
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s add|check|del NETNAME NETNS_PATH\n", filepath.Base(os.Args[0]))
	fmt.Fprintf(os.Stderr, "env: NETCONFPATH CNI_PATH CNI_ARGS CAP_ARGS CNI_IFNAME CNI_CACHE_DIR\n")
	fmt.Fprintf(os.Stderr, "(gc/status are unavailable: libcni 1.1.2 lacks GCNetworkList/GetStatusNetworkList)\n")
	os.Exit(1)
}

// parseCNIArgs turns "A=1;B=2" into libcni's [][2]string form.
func parseCNIArgs(s string) ([][2]string, error) {
	var out [][2]string
	if s == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ";") {
		if item == "" {
			continue
		}
		kv := strings.SplitN(item, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return nil, fmt.Errorf("invalid %s item %q (want KEY=VALUE)", envCNIArgs, item)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

// containerIDFor derives the container id from the netns path the same way
// upstream cnitool does: "cnitool-" + first 10 bytes of sha512 in hex.
func containerIDFor(netns string) string {
	sum := sha512.Sum512([]byte(netns))
	return "cnitool-" + hex.EncodeToString(sum[:10])
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	verb := os.Args[1]
	switch verb {
	case "add", "check", "del":
		if len(os.Args) != 4 {
			usage()
		}
	case "gc", "status":
		die("%s: not supported by libcni 1.1.2 (no GCNetworkList/GetStatusNetworkList)", verb)
	default:
		usage()
	}
	netName, netnsArg := os.Args[2], os.Args[3]

	confDir := os.Getenv(envNetConfPath)
	if confDir == "" {
		confDir = defaultNetConfPath
	}
	list, err := libcni.LoadConfList(confDir, netName)
	if err != nil {
		die("loading network %q from %s: %v", netName, confDir, err)
	}

	var capArgs map[string]interface{}
	if s := os.Getenv(envCapArgs); s != "" {
		if err := json.Unmarshal([]byte(s), &capArgs); err != nil {
			die("parsing %s: %v", envCapArgs, err)
		}
	}
	cniArgs, err := parseCNIArgs(os.Getenv(envCNIArgs))
	if err != nil {
		die("%v", err)
	}
	ifName := os.Getenv(envIfName)
	if ifName == "" {
		ifName = defaultIfName
	}
	netns := ""
	if netnsArg != "" {
		if netns, err = filepath.Abs(netnsArg); err != nil {
			die("netns path %q: %v", netnsArg, err)
		}
	} else if verb != "del" {
		die("%s: NETNS_PATH must not be empty", verb)
	}
	containerID := os.Getenv(envContainerID)
	if containerID == "" {
		containerID = containerIDFor(netns)
	}

	var path []string
	if p := os.Getenv(envCNIPath); p != "" {
		path = filepath.SplitList(p)
	}
	cni := libcni.NewCNIConfigWithCacheDir(path, os.Getenv(envCacheDir), nil)

	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           cniArgs,
		CapabilityArgs: capArgs,
	}
	ctx := context.Background()

	switch verb {
	case "add":
		if _, err := cni.ValidateNetworkList(ctx, list); err != nil {
			die("network %q failed validation: %v", netName, err)
		}
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			die("ADD %s: %v", netName, err)
		}
		if result != nil {
			if err := result.PrintTo(os.Stdout); err != nil {
				die("printing result: %v", err)
			}
			fmt.Println()
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			die("CHECK %s: %v", netName, err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			die("DEL %s: %v", netName, err)
		}
	}
}
