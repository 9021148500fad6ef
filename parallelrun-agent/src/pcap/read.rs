//! Reading pcap and pcapng files into TCP segments (offline pipeline input).
