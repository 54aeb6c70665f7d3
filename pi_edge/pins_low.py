"""``python -m pi_edge.pins_low``: drive every sorter pin low and exit. The systemd unit runs
it after the client stops for any reason (``ExecStopPost``), so even a SIGKILL or a crash
of the interpreter cannot leave a sorter gate energised."""

from pi_edge.edge import sorter_pins
from pi_edge.gpio import SorterGpio

if __name__ == "__main__":
    SorterGpio(sorter_pins()).close()
    print("sorter pins low:", sorter_pins())
